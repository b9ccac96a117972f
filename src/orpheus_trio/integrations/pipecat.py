"""A Pipecat ``TTSService`` speaking through :class:`~orpheus_trio.OrpheusTTS` (extra ``pipecat``).

Pipecat runs on asyncio; the client runs there natively (AnyIO). Pipecat's
own sentence aggregation hands ``run_tts`` one sentence at a time; each
becomes one streamed request, its PCM (24 kHz s16le) pushed as audio frames,
resampled by Pipecat when the pipeline runs at another rate.

Interruption: on an ``InterruptionFrame`` Pipecat cancels the task running
``run_tts``; the request's stream is held in ``async with open_stream`` so
the cancellation closes it at once and the server stops synthesizing (it
sees the cancellation within 100 ms; ``tests/test_pipecat.py``).

    from orpheus_trio.integrations.pipecat import OrpheusTTSService
    tts = OrpheusTTSService(url="http://127.0.0.1:8000", voice="tara")
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

try:
    from pipecat.frames.frames import ErrorFrame, Frame
    from pipecat.services.settings import TTSSettings
    from pipecat.services.tts_service import TTSService
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "orpheus_trio.integrations.pipecat needs Pipecat: pip install 'orpheus-trio[pipecat]'"
    ) from error

from ..client import OrpheusTTS
from ..errors import OrpheusError

__all__ = ["OrpheusTTSService"]

SAMPLE_RATE = 24_000


class OrpheusTTSService(TTSService):
    """Orpheus speech for a Pipecat pipeline: one streamed request per sentence."""

    def __init__(
        self,
        *,
        url: str | None = None,
        client: OrpheusTTS | None = None,
        voice: str | None = None,
        params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """``url`` (a client is made and closed with the service) or your own ``client``.

        ``params``: request parameters (``temperature``, ``timeout_s``...);
        ``kwargs`` go to Pipecat's ``TTSService`` (``sample_rate``, ...). The
        voice is a Pipecat setting: a ``TTSUpdateSettingsFrame`` changes it.
        """
        if (url is None) == (client is None):
            raise ValueError("OrpheusTTSService needs exactly one of url= or client=")
        # Every setting given (Pipecat logs an error at start for any left out): the
        # service chooses the model, and the text's language is the model's business.
        kwargs.setdefault("settings", TTSSettings(model=None, voice=voice, language=None))
        super().__init__(push_start_frame=True, push_stop_frames=True, **kwargs)
        self._owns_client = client is None
        self._client = client if client is not None else OrpheusTTS(url)  # type: ignore[arg-type]
        self._params = dict(params or {})

    @property
    def voice(self) -> str | None:
        """The voice requests name (``None``: the service's default)."""
        voice = self._settings.voice
        return voice if isinstance(voice, str) else None

    def can_generate_metrics(self) -> bool:
        return True

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]  # Pipecat's is unannotated
        if self._owns_client:
            await self._client.close()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        async def pcm() -> AsyncGenerator[bytes, None]:
            # Held open in this task: Pipecat's cancellation on interruption closes it.
            async with self._client.open_stream(text, self.voice, **self._params) as audio:
                async for chunk in audio:
                    yield chunk

        try:
            await self.start_tts_usage_metrics(text)
            # aclosing: cancelled while Pipecat pushes a frame, the request still closes now.
            async with aclosing(pcm()) as source:
                async for frame in self._stream_audio_frames_from_iterator(
                    source, in_sample_rate=SAMPLE_RATE, context_id=context_id
                ):
                    await self.stop_ttfb_metrics()
                    yield frame
        except OrpheusError as error:
            yield ErrorFrame(error=f"Orpheus TTS failed: {error}")
        finally:
            await self.stop_ttfb_metrics()
