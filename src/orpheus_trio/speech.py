"""What every speech source builds on ``open_stream``: ``stream`` and ``synthesize``.

The network client (:class:`~orpheus_trio.client.OrpheusTTS`) and the on-box
synthesizer (:class:`~orpheus_trio.local.synthesizer.LocalSynthesizer`) differ
only in how one utterance is opened. Long text is handled here, once for both:
it is split into pieces (``textsplit``) and streamed in order with the next
piece synthesized while the current one plays (``longtext``), the joins
between pieces faded so that they do not click (``joins``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

from .formats import check_format, encode_stream, require_codec_library
from .joins import DEFAULT_FADE_SAMPLES
from .longtext import ordered_stream
from .textsplit import SplitMode, split_for_synthesis

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
        (:func:`orpheus_trio.formats.encode_stream`); checked before any request.

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

        async def one(piece: str) -> AsyncGenerator[bytes, None]:
            async with self.open_stream(
                piece, voice, timeout_s=timeout_s, **params
            ) as audio:
                async for pcm in audio:
                    yield pcm

        source = (
            one(pieces[0])
            if len(pieces) == 1
            else ordered_stream(pieces, one, join_fade_samples=DEFAULT_FADE_SAMPLES)
        )
        async with aclosing(source):
            async for pcm in source:
                yield pcm

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
