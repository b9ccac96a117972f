"""Joins between pieces of speech: how abrupt each one is, and a smoother that removes the click.

Long text is synthesized as separate requests whose audio is played back to
back. Each request's audio starts and ends wherever its engine put it (espeak
starts a voiced word at full level; a neural engine may stop mid-waveform), so
a butted join can be a step far larger than anything the signal does around
it: a click, or a level jump.

:func:`join_discontinuities` measures that step; :class:`JoinSmoother` (sans-IO:
PCM in, PCM out) fades each piece's last few milliseconds out and the next
piece's first few in, so the join meets at silence. Only the samples within
``fade_samples`` of a join change; the length of the audio does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_FADE_SAMPLES",
    "DEFAULT_FLOOR",
    "DEFAULT_WINDOW",
    "JoinSmoother",
    "join_discontinuities",
]

#: 5 ms at 24 kHz: long enough to take the click out, short enough to be inaudible as a fade.
DEFAULT_FADE_SAMPLES = 120
#: Samples each side of a join whose own sample-to-sample steps set the reference (2 ms).
DEFAULT_WINDOW = 48
#: Smallest reference step: below it, a step is as quiet as dither (0.1 % of full scale).
DEFAULT_FLOOR = 32.0


def join_discontinuities(
    samples: np.ndarray | bytes,
    joins: Sequence[int],
    *,
    window: int = DEFAULT_WINDOW,
    floor: float = DEFAULT_FLOOR,
) -> list[float]:
    """How abrupt each join is: the step across it over the signal's own steps next to it.

    ``samples``: the joined audio (int16 samples, or s16le bytes). ``joins``: the
    index of the first sample of each piece after the first. For each join the
    step ``|x[j] - x[j-1]|`` is divided by the largest step within ``window``
    samples on the quieter side (the smaller of the two sides' largest steps,
    at least ``floor``): a join is seamless when the step is no bigger than what
    the signal does on both sides anyway (around 1 or less), and a click when it
    is many times that (a step out of silence into full level, say).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = (
        np.frombuffer(samples, dtype="<i2")
        if isinstance(samples, bytes | bytearray | memoryview)
        else np.asarray(samples)
    ).astype(np.int64)
    ratios: list[float] = []
    for j in joins:
        if not 1 <= j < len(x):
            raise ValueError(f"join at sample {j} is outside the audio (0..{len(x)})")
        before = np.abs(np.diff(x[max(0, j - window) : j]))
        after = np.abs(np.diff(x[j : j + window]))
        own = min(
            float(before.max()) if len(before) else 0.0,
            float(after.max()) if len(after) else 0.0,
        )
        ratios.append(abs(float(x[j] - x[j - 1])) / max(own, floor))
    return ratios


def _fade_in(n: int) -> np.ndarray:
    """Raised-cosine gains over ``n`` samples, from exactly 0 rising to just below 1."""
    return np.asarray(0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n), dtype=np.float64)


def _fade_out(n: int) -> np.ndarray:
    """The mirror image: from just below 1 falling to exactly 0 at the last sample."""
    return np.asarray(0.5 + 0.5 * np.cos(np.pi * (np.arange(n) + 1) / n), dtype=np.float64)


class JoinSmoother:
    """Fades audio in after each join and out before it; holds back one fade's worth of samples.

    Feed a piece's PCM with :meth:`push` after :meth:`start_piece`, and end it
    with :meth:`end_piece`. The first piece is not faded in; a piece's tail is
    faded out unless ``end_piece`` is told it is the last. Chunks of any even
    length work; what comes out is whole samples too.
    """

    def __init__(self, fade_samples: int = DEFAULT_FADE_SAMPLES) -> None:
        if fade_samples < 1:
            raise ValueError(f"fade_samples must be >= 1, got {fade_samples}")
        self._fade = fade_samples
        self._in = _fade_in(fade_samples)
        self._out = _fade_out(fade_samples)
        self._pieces = 0
        self._faded_in = 0  # samples of the current piece's head faded so far
        self._held = np.empty(0, dtype=np.int16)  # the current piece's latest samples

    def start_piece(self) -> None:
        """Audio pushed from now on belongs to a new piece."""
        if len(self._held):
            raise RuntimeError("end_piece() must come before the next start_piece()")
        self._pieces += 1
        self._faded_in = 0 if self._pieces > 1 else self._fade

    def push(self, pcm: bytes) -> bytes:
        """The audio that can be played now (everything but the last ``fade_samples``)."""
        if len(pcm) % 2:
            raise ValueError(f"PCM must be whole 16-bit samples, got {len(pcm)} bytes")
        if self._pieces == 0:
            raise RuntimeError("start_piece() must come before push()")
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._faded_in < self._fade:
            n = min(self._fade - self._faded_in, len(samples))
            head = samples[:n] * self._in[self._faded_in : self._faded_in + n]
            samples = np.concatenate([np.rint(head).astype(np.int16), samples[n:]])
            self._faded_in += n
        held = np.concatenate([self._held, samples]) if len(self._held) else samples
        ready = max(0, len(held) - self._fade)
        self._held = held[ready:]
        return held[:ready].astype("<i2").tobytes()

    def end_piece(self, *, last: bool) -> bytes:
        """The held tail of the piece: faded out to silence, unless this was the last piece."""
        tail, self._held = self._held, np.empty(0, dtype=np.int16)
        if not last and len(tail):
            tail = np.rint(tail * self._out[self._fade - len(tail) :]).astype(np.int16)
        return tail.astype("<i2").tobytes()
