"""A LiveKit Agents ``tts.TTS`` speaking through :class:`~orpheus_trio.OrpheusTTS` (extra ``livekit``).

LiveKit Agents runs on asyncio; the client runs there natively (AnyIO), with
its hedging, failover and deadlines. Both of LiveKit's ways to ask for speech:

- :meth:`TTS.synthesize`: one text, one streamed request (its PCM pushed as
  it arrives);
- :meth:`TTS.stream`: text pushed as the LLM writes it. Each segment (the
  text up to a ``flush()``, or the end of input) goes through
  :meth:`~orpheus_trio.OrpheusTTS.stream_text`, the project's own input
  streaming: every sentence is requested as soon as it is complete, with
  the same chunker the realtime WebSocket API uses.

Audio is 24 kHz mono s16le. Interruption: LiveKit closes the stream
(``aclose()`` cancels its task); the cancellation closes the request in
flight (prefetched ones too) and the server stops synthesizing.

Errors: the client has already retried and failed over by the time it
raises, so an :class:`~orpheus_trio.OrpheusError` becomes a non-retryable
``APIError`` (LiveKit's own retry would only repeat that).

    from orpheus_trio.integrations.livekit import TTS
    session = AgentSession(tts=TTS(url="http://127.0.0.1:8000", voice="tara"), ...)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

try:
    from livekit.agents import tts, utils
    from livekit.agents._exceptions import APIError
    from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "orpheus_trio.integrations.livekit needs LiveKit Agents: "
        "pip install 'orpheus-trio[livekit]'"
    ) from error

from ..audio import SAMPLE_RATE
from ..client import OrpheusTTS
from ..errors import OrpheusError

__all__ = ["SAMPLE_RATE", "TTS"]


class TTS(tts.TTS[None]):
    """Orpheus speech for LiveKit Agents: ``synthesize()`` and streaming ``stream()``."""

    def __init__(
        self,
        *,
        url: str | None = None,
        client: OrpheusTTS | None = None,
        voice: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """``url`` (a client is made and closed with this TTS) or your own ``client``.

        ``params``: request parameters (``temperature``, ``timeout_s``...).
        """
        if (url is None) == (client is None):
            raise ValueError("orpheus_trio.integrations.livekit.TTS needs exactly one of url= or client=")
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
        )
        self._owns_client = client is None
        self._client = client if client is not None else OrpheusTTS(url)  # type: ignore[arg-type]
        self._voice = voice
        self._params = dict(params or {})

    @property
    def model(self) -> str:
        return "orpheus"

    @property
    def provider(self) -> str:
        return "orpheus-trio"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.SynthesizeStream:
        return _SynthesizeStream(tts=self, conn_options=conn_options)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()


class _ChunkedStream(tts.ChunkedStream):
    """One text, one streamed request."""

    _tts: TTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner = self._tts
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        try:
            async with owner._client.open_stream(
                self.input_text, owner._voice, **owner._params
            ) as audio:
                async for pcm in audio:
                    output_emitter.push(pcm)
        except OrpheusError as error:
            raise APIError(f"Orpheus TTS failed: {error}", retryable=False) from error
        output_emitter.flush()


class _SynthesizeStream(tts.SynthesizeStream):
    """Text as it is written; each flushed segment spoken through ``stream_text``."""

    _tts: TTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner = self._tts
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
            stream=True,
        )
        items = self._input_ch.__aiter__()
        while True:
            first = await _next_text(items)
            if first is None:
                return  # the input ended
            segment = _Segment(first, items)
            output_emitter.start_segment(segment_id=utils.shortuuid())
            try:
                speech = owner._client.stream_text(segment.tokens(), owner._voice, **owner._params)
                async with aclosing(speech):
                    async for pcm in speech:
                        output_emitter.push(pcm)
            except OrpheusError as error:
                raise APIError(f"Orpheus TTS failed: {error}", retryable=False) from error
            output_emitter.end_segment()
            if segment.input_ended:
                return


class _Segment:
    """The text of one segment: ``first``, then what comes until a flush (or the end)."""

    def __init__(self, first: str, items: AsyncIterator[Any]) -> None:
        self.first = first
        self.items = items
        self.input_ended = False

    async def tokens(self) -> AsyncIterator[str]:
        yield self.first
        while True:
            try:
                item = await self.items.__anext__()
            except StopAsyncIteration:
                self.input_ended = True
                return
            if isinstance(item, tts.SynthesizeStream._FlushSentinel):
                return
            yield item


async def _next_text(items: AsyncIterator[Any]) -> str | None:
    """The next non-empty text, past empty flushes; ``None`` when the input ended."""
    while True:
        try:
            item = await items.__anext__()
        except StopAsyncIteration:
            return None
        if isinstance(item, str) and item:
            return item
