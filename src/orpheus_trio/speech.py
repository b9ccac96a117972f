"""What every speech source builds on ``open_stream``: ``stream``, ``stream_text``, ``synthesize``.

The network client (:class:`~orpheus_trio.client.OrpheusTTS`) and the on-box
synthesizer (:class:`~orpheus_trio.local.synthesizer.LocalSynthesizer`) differ
only in how one utterance is opened. Long text is handled here, once for both:
it is split into pieces (``text.split``) and streamed in order with the next
piece synthesized while the current one plays (``longtext``), the joins
between pieces faded so that they do not click (``joins``). Text that arrives
over time (an LLM's tokens) takes the same path, cut into sentences as they
complete (``chunker``, ``textstream``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

from .text.chunker import (
    DEFAULT_END_WAIT_S,
    DEFAULT_MAX_WAIT_S,
    DEFAULT_MIN_CHARS,
    SentenceChunker,
)
from .audio.formats import check_format, encode_stream, require_codec_library
from .audio.joins import DEFAULT_FADE_SAMPLES
from .text.longtext import DEFAULT_PREFETCH, ordered_stream
from .text.stream import sentences
from .text.split import SplitMode, split_for_synthesis

__all__ = ["SpeechSource"]


class SpeechSource(ABC):
    """A source of speech: one abstract method, ``open_stream``, and two built on it."""

    @abstractmethod
    def open_stream(
        self,
        text: str,
        voice: str | None = None,
        *,
        timeout_s: float | None = None,
        **params: Any,
    ) -> AbstractAsyncContextManager[AsyncIterable[bytes]]:
        """One utterance's audio, closed when the block is left."""

    async def stream(
        self,
        text: str,
        voice: str | None = None,
        *,
        split: SplitMode = "auto",
        timeout_s: float | None = None,
        format: str = "pcm",
        **params: Any,
    ) -> AsyncGenerator[bytes, None]:
        """Yield the speech for ``text`` as raw PCM chunks (s16le mono 24 kHz, even length).

        ``format`` other than ``"pcm"`` (``mp3``, ``opus``, ``aac``, ``flac``,
        ``wav``) yields that file's bytes instead, encoded as the audio arrives
        (:func:`orpheus_trio.audio.formats.encode_stream`); checked before any request.

        ``params`` go to the engine. ``split``: ``"auto"`` (the default) splits
        text longer than 400 characters into sentence-aligned pieces,
        ``"sentences"`` always splits, ``"never"`` sends the text whole. Pieces
        are separate requests (``timeout_s`` applies to each) whose audio is
        yielded strictly in order; a failing piece raises with a note naming it.
        At each join the first piece's last 5 ms fade out and the next one's
        first 5 ms fade in, so that pieces meet at silence instead of clicking;
        no other sample changes.
        Break out early with ``contextlib.aclosing``, or use :meth:`open_stream`,
        to close the stream at once.
        """
        if format != "pcm":
            check_format(format)
            require_codec_library(format)
            encoded = encode_stream(
                self.stream(text, voice, split=split, timeout_s=timeout_s, **params), format
            )
            async with aclosing(encoded):
                async for data in encoded:
                    yield data
            return
        pieces = split_for_synthesis(text, split)
        one = self._piece_streamer(voice, timeout_s, params)
        source = (
            one(pieces[0])
            if len(pieces) == 1
            else ordered_stream(pieces, one, join_fade_samples=DEFAULT_FADE_SAMPLES)
        )
        async with aclosing(source):
            async for pcm in source:
                yield pcm

    async def stream_text(
        self,
        text_chunks: AsyncIterable[str],
        voice: str | None = None,
        *,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        min_chars: int = DEFAULT_MIN_CHARS,
        end_wait_s: float = DEFAULT_END_WAIT_S,
        prefetch: int = DEFAULT_PREFETCH,
        timeout_s: float | None = None,
        **params: Any,
    ) -> AsyncGenerator[bytes, None]:
        """Speak text as it is written: ``text_chunks`` (an LLM's token stream) in, PCM out.

        Each sentence is requested as soon as it is complete (the text after it
        has begun, or ``end_wait_s`` passed without any; see
        :mod:`~orpheus_trio.text.chunker`), so the first audio comes one sentence
        in, not at the end of the input; a clause still unfinished after
        ``max_wait_s`` is spoken early if it has ``min_chars``. Up to
        ``prefetch`` sentences are synthesized while the current one plays;
        joins are faded as in :meth:`stream`. Ends when the input ends and its
        last sentence has been spoken; an error from ``text_chunks`` is raised
        after the audio of the sentences before it.

        Barge-in: leave ``async with contextlib.aclosing(tts.stream_text(...))``
        (cancel its scope, or ``aclose()``) and every request in flight,
        prefetched ones too, is cancelled at once; no more audio is yielded.
        """
        chunker = SentenceChunker(
            max_wait_s=max_wait_s, min_chars=min_chars, end_wait_s=end_wait_s
        )
        source = ordered_stream(
            sentences(text_chunks, chunker),
            self._piece_streamer(voice, timeout_s, params),
            prefetch=prefetch,
            join_fade_samples=DEFAULT_FADE_SAMPLES,
        )
        async with aclosing(source):
            async for pcm in source:
                yield pcm

    def _piece_streamer(
        self, voice: str | None, timeout_s: float | None, params: dict[str, Any]
    ) -> Callable[[str], AsyncGenerator[bytes, None]]:
        """One request per piece of text, for the long-text pipeline."""

        async def one(piece: str) -> AsyncGenerator[bytes, None]:
            async with self.open_stream(
                piece, voice, timeout_s=timeout_s, **params
            ) as audio:
                async for pcm in audio:
                    yield pcm

        return one

    async def synthesize(
        self,
        text: str,
        voice: str | None = None,
        *,
        split: SplitMode = "auto",
        timeout_s: float | None = None,
        format: str = "pcm",
        **params: Any,
    ) -> bytes:
        """The whole speech for ``text`` as one PCM buffer, or one file in ``format``
        (long text split as in :meth:`stream`)."""
        audio = self.stream(
            text, voice, split=split, timeout_s=timeout_s, format=format, **params
        )
        async with aclosing(audio):
            return b"".join([pcm async for pcm in audio])
