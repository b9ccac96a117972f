"""Streaming SNAC decode: audio as frames arrive, identical to decoding the whole utterance.

SNAC's decoder is a stack of convolutions, so one output sample depends on a
fixed, finite span of latent steps around its own (10 either side for the
24 kHz model; :attr:`SnacDecoder.context_latents` computes it exactly from the
layers). :class:`StreamPlanner` cuts the stream into windows that carry that
much context on both sides, keeps only each window's centre, and so reproduces
the whole-utterance decode to float rounding (the noise blocks off). At the
start and the end of an utterance a window simply ends where the utterance
ends, as the whole decode does.

Look-ahead: a frame is emitted once the 3 frames after it have arrived (12
latent steps >= 10), so the first audio comes after 4 frames; at the end of
the stream :meth:`StreamPlanner.finish` releases the rest. Hop policy: the
first window emits ``first_hop`` frames; each later window emits up to twice
as many frames as have been emitted so far, capped at ``max_hop`` (1, 2, 6,
16, 16, ...): the first audio comes as early as possible, and the audio the
listener already holds pays for bigger windows, which waste less on context.
Given the time (``next_window(now)``), the planner also tracks how much audio
the listener has left and how fast frames arrive: when waiting for a full hop
would let the audio left fall under ``low_water_s`` and take longer than
``min_wait_s``, it releases whatever frames are ready. A slow token source
then costs window efficiency, not gaps; a fast one (or an overloaded decoder,
whose tokens queue up) still gets full, efficient windows.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import anyio
import anyio.to_thread

from .snac_decoder import SnacDecoder, float_to_pcm16
from .tokens import TOKENS_PER_FRAME, FrameAssembler, OnInvalid

__all__ = ["DecodeWindow", "StreamPlanner", "StreamingDecoder", "WindowDecoder", "pcm_from_tokens"]

Audio = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class DecodeWindow:
    """One decode call: ``frames`` (``(n, 7)`` codes) of which latent steps
    ``[latent_start, latent_stop)`` are decoded; samples ``[keep_start,
    keep_stop)`` of that audio are the new output (frames ``first_frame``...)."""

    frames: npt.NDArray[np.int64]
    latent_start: int
    latent_stop: int
    keep_start: int
    keep_stop: int
    first_frame: int

    @property
    def shape_key(self) -> tuple[int, int, int]:
        """Windows with equal keys can be decoded in one batch."""
        return (len(self.frames), self.latent_start, self.latent_stop)

    def keep(self, audio: Audio) -> Audio:
        """The new output samples of this window's decoded audio."""
        return audio[self.keep_start : self.keep_stop]


class WindowDecoder(Protocol):
    """Anything that decodes windows asynchronously (e.g. ``BatchingDecoder``)."""

    @property
    def decoder(self) -> SnacDecoder: ...

    async def decode_window(self, window: DecodeWindow) -> Audio: ...


class StreamPlanner:
    """Sans-IO: frames in, :class:`DecodeWindow` s out, with bounded look-ahead.

    ``push`` frames as they are assembled, take windows with
    :meth:`next_window` until it returns ``None``, decode each window and
    keep its centre (:meth:`DecodeWindow.keep`); call :meth:`finish` at the
    end of the stream and drain the remaining windows.
    """

    def __init__(
        self,
        *,
        context_latents: tuple[int, int],
        latents_per_frame: int = 4,
        samples_per_latent: int = 512,
        first_hop: int = 1,
        max_hop: int = 16,
        sample_rate: int = 24000,
        low_water_s: float = 0.25,
        min_wait_s: float = 0.05,
    ) -> None:
        if not 1 <= first_hop <= max_hop:
            raise ValueError(f"need 1 <= first_hop <= max_hop, got {first_hop}, {max_hop}")
        self.left_latents, self.right_latents = context_latents
        self.latents_per_frame = latents_per_frame
        self.samples_per_latent = samples_per_latent
        self.first_hop = first_hop
        self.max_hop = max_hop
        self.frame_s = latents_per_frame * samples_per_latent / sample_rate
        self.low_water_s = low_water_s
        self.min_wait_s = min_wait_s
        #: Frames that must follow a frame before it can be emitted.
        self.lookahead_frames = -(-self.right_latents // latents_per_frame)
        self.frames_received = 0
        self.frames_emitted = 0
        self.finished = False
        self._buffer = np.zeros((0, TOKENS_PER_FRAME), dtype=np.int64)
        self._buffer_start = 0  # utterance index of _buffer[0]
        self._playback_start: float | None = None  # when the first audio went out
        self._frame_interval: float | None = None  # seconds between arriving frames (smoothed)
        self._idle_since: float | None = None  # last call that found nothing to do
        self._idle_frames = 0  # frames received at that call

    @classmethod
    def for_decoder(cls, decoder: SnacDecoder, *, first_hop: int = 1, max_hop: int = 16) -> StreamPlanner:
        return cls(
            context_latents=decoder.context_latents,
            latents_per_frame=decoder.latents_per_frame,
            samples_per_latent=decoder.samples_per_latent,
            sample_rate=decoder.sample_rate,
            first_hop=first_hop,
            max_hop=max_hop,
        )

    def push(self, frames: npt.ArrayLike) -> None:
        """Append ``(n, 7)`` code frames."""
        if self.finished:
            raise RuntimeError("push() after finish()")
        array = np.asarray(frames, dtype=np.int64).reshape(-1, TOKENS_PER_FRAME)
        self._buffer = np.concatenate([self._buffer, array])
        self.frames_received += len(array)

    def finish(self) -> None:
        """End of stream: the remaining frames need no look-ahead."""
        self.finished = True

    @property
    def done(self) -> bool:
        """Finished and every frame emitted."""
        return self.finished and self.frames_emitted == self.frames_received

    def frames_wanted(self) -> int:
        """Frames that must still arrive before the next full window (0: one is ready, or finished)."""
        if self.finished:
            return 0
        return max(self.frames_emitted + self._hop() + self.lookahead_frames - self.frames_received, 0)

    def _hop(self) -> int:
        return min(max(2 * self.frames_emitted, self.first_hop), self.max_hop)

    def audio_left_s(self, now: float, playback_start: float) -> float:
        """Audio emitted but not yet played at ``now``, for playback that began at ``playback_start``."""
        return playback_start + self.frames_emitted * self.frame_s - now

    def next_window(self, now: float | None = None) -> DecodeWindow | None:
        """The next window to decode, or ``None`` until more frames (or finish) arrive.

        ``now`` (seconds, any monotonic clock) enables the low-water rule; the
        first window's ``now`` is taken as the start of playback.
        """
        if now is not None:
            self._note_arrivals(now)
        window = self._plan(now)
        if now is not None:
            self._idle_since = None if window is not None else now
            self._idle_frames = self.frames_received
        return window

    def _plan(self, now: float | None) -> DecodeWindow | None:
        ready = self.frames_received if self.finished else self.frames_received - self.lookahead_frames
        available = ready - self.frames_emitted
        if available <= 0:
            return None
        hop = self._hop()
        needed = 1 if self._running_dry(now, hop - available) else hop
        if available < needed and not self.finished:
            return None
        start = self.frames_emitted
        stop = start + min(available, self.max_hop if self.finished else hop)
        lpf = self.latents_per_frame
        latent_lo = max(start * lpf - self.left_latents, 0)
        latent_hi = min(stop * lpf + self.right_latents, self.frames_received * lpf)
        first = latent_lo // lpf
        last = -(-latent_hi // lpf)
        base = first * lpf
        keep_start = (start * lpf - latent_lo) * self.samples_per_latent
        window = DecodeWindow(
            frames=self._buffer[first - self._buffer_start : last - self._buffer_start].copy(),
            latent_start=latent_lo - base,
            latent_stop=latent_hi - base,
            keep_start=keep_start,
            keep_stop=keep_start + (stop - start) * lpf * self.samples_per_latent,
            first_frame=start,
        )
        self.frames_emitted = stop
        if self._playback_start is None:
            self._playback_start = now
        self._forget_before(max(stop * lpf - self.left_latents, 0) // lpf)
        return window

    def _note_arrivals(self, now: float) -> None:
        # Only time spent waiting for frames counts: a call right after a
        # window would include the decode.
        new = self.frames_received - self._idle_frames
        if self._idle_since is None or new <= 0:
            return
        interval = (now - self._idle_since) / new
        previous = self._frame_interval
        self._frame_interval = interval if previous is None else (previous + interval) / 2

    def _running_dry(self, now: float | None, missing: int) -> bool:
        """Would waiting for ``missing`` more frames starve the listener?"""
        if now is None or self._playback_start is None or self._frame_interval is None:
            return False
        audio_left = self.audio_left_s(now, self._playback_start)
        wait = missing * self._frame_interval
        return wait > max(audio_left - self.low_water_s, self.min_wait_s)

    def _forget_before(self, frame: int) -> None:
        if frame > self._buffer_start:
            self._buffer = self._buffer[frame - self._buffer_start :]
            self._buffer_start = frame


class StreamingDecoder:
    """Synchronous streaming decode: push frames, pop audio, flush at the end.

    Windows are decoded as soon as the planner releases them, on the calling
    thread. For many concurrent streams use :func:`pcm_from_tokens` with a
    ``BatchingDecoder``.
    """

    def __init__(self, decoder: SnacDecoder, *, first_hop: int = 1, max_hop: int = 16) -> None:
        self.decoder = decoder
        self.planner = StreamPlanner.for_decoder(decoder, first_hop=first_hop, max_hop=max_hop)
        self._ready: list[Audio] = []

    def push(self, frames: npt.ArrayLike) -> None:
        """Add ``(n, 7)`` frames and decode whatever windows they complete."""
        self.planner.push(frames)
        self._drain()

    def flush(self) -> None:
        """End of stream: decode everything still held back."""
        self.planner.finish()
        self._drain()

    def pop_audio(self) -> Audio:
        """Float samples decoded since the last pop."""
        audio = np.concatenate(self._ready) if self._ready else np.zeros(0, dtype=np.float32)
        self._ready = []
        return audio

    def pop_pcm(self) -> bytes:
        """s16le mono PCM bytes decoded since the last pop."""
        return float_to_pcm16(self.pop_audio())

    def _drain(self) -> None:
        while (window := self.planner.next_window()) is not None:
            audio = self.decoder.decode_batch(window.frames[None], window.latent_start, window.latent_stop)
            self._ready.append(window.keep(audio[0]))


async def pcm_from_tokens(
    tokens: AsyncIterable[int | str],
    decoder: SnacDecoder | WindowDecoder,
    *,
    on_invalid: OnInvalid = "error",
    first_hop: int = 1,
    max_hop: int = 16,
) -> AsyncIterator[bytes]:
    """Orpheus tokens (ids, or ``<custom_token_N>`` text pieces) in, PCM chunks out.

    ``decoder`` is a :class:`SnacDecoder` (each window decoded in a worker
    thread) or a ``BatchingDecoder`` shared by many streams. Yields s16le mono
    PCM bytes (even length) as soon as look-ahead allows, and the rest when
    ``tokens`` ends. Bad tokens follow ``on_invalid`` (see :mod:`.tokens`).
    """
    assembler = FrameAssembler(on_invalid=on_invalid)
    model = decoder if isinstance(decoder, SnacDecoder) else decoder.decoder
    planner = StreamPlanner.for_decoder(model, first_hop=first_hop, max_hop=max_hop)
    async for token in tokens:
        frames = assembler.feed_text(token) if isinstance(token, str) else assembler.feed_id(token)
        if len(frames):
            planner.push(frames)
            while (window := planner.next_window(anyio.current_time())) is not None:
                yield float_to_pcm16(await _decode(decoder, window))
    assembler.close()
    planner.finish()
    while (window := planner.next_window()) is not None:
        yield float_to_pcm16(await _decode(decoder, window))


async def _decode(decoder: SnacDecoder | WindowDecoder, window: DecodeWindow) -> Audio:
    if isinstance(decoder, SnacDecoder):
        audio = await anyio.to_thread.run_sync(
            decoder.decode_batch, window.frames[None], window.latent_start, window.latent_stop
        )
        return window.keep(audio[0])
    return await decoder.decode_window(window)
