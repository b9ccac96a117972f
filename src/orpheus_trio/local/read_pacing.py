"""Reading an engine's token stream in fewer, bigger pieces while the audio has no use for them yet.

An inference engine writes every token to the stream on its own, so a worker
that reads tokens as they come wakes once per token, about 80 times per second
of audio per stream, and that wake-up (socket, HTTP chunk, SSE event, JSON) is
most of the worker's CPU. Yet the decoder makes no audio until its next window
is complete (up to 16 frames, 112 tokens): a token read early only waits in a
buffer. So while the next window still needs many tokens and the listener holds
audio, the reader may leave the tokens in the socket for a while and take them
all in one read.

How long (:meth:`ReadPacer.wait_s`): ``share`` (half) of the time the missing
tokens are expected to take at the rate seen so far (the faster of the
long-run and the latest rate), at most ``max_wait_s``, and never so long that
the listener's audio in hand would fall under ``margin_s``. At a steady rate
the window's last token is still read as it arrives, so no audio comes later.
A window comes later only when the rate more than doubles during a wait, or
the reply ends before the window fills; then by at most the wait, which the
listener's audio in hand covers. Nothing waits before the first audio.

Sans-IO: the caller passes the time; the clock is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ReadPacer"]


@dataclass
class ReadPacer:
    """How long a reader may leave a stream's tokens unread. One per stream."""

    #: Wait this share of the time the missing tokens should take.
    share: float = 0.5
    #: The longest single wait (seconds).
    max_wait_s: float = 0.1
    #: Audio (seconds) the listener must still hold after a wait.
    margin_s: float = 0.25
    _first: tuple[float, int] | None = field(default=None, init=False)
    _last: tuple[float, int] | None = field(default=None, init=False)
    _recent_rate: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"share must be in (0, 1], got {self.share!r}")
        if not self.max_wait_s >= 0 or not self.margin_s >= 0:
            raise ValueError("max_wait_s and margin_s must be >= 0")

    def rate(self) -> float:
        """Tokens per second: the faster of the long-run and the latest rate (0 while unknown)."""
        if self._first is None or self._last is None:
            return 0.0
        (t0, n0), (t1, n1) = self._first, self._last
        long_run = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        return max(long_run, self._recent_rate)

    def arrived(self, now: float, received: int) -> None:
        """Right after a read: ``received`` tokens have been read so far."""
        if received <= 0:
            return
        if self._first is None or self._last is None:
            self._first = self._last = (now, received)
            return
        t_last, n_last = self._last
        if received > n_last and now > t_last:
            self._recent_rate = (received - n_last) / (now - t_last)
            self._last = (now, received)

    def wait_s(self, now: float, wanted: int, audio_left_s: float | None) -> float:
        """Seconds from ``now`` to wait before the next read.

        ``wanted``: tokens that must still arrive before the next window can be
        decoded; ``audio_left_s``: audio sent but not yet played by the
        listener (``None`` before the first audio). The wait is reckoned from
        the last read, so time spent decoding since then counts.
        """
        rate = self.rate()
        if audio_left_s is None or rate <= 0 or wanted <= 1 or self._last is None:
            return 0.0
        wake = self._last[0] + self.share * (wanted - 1) / rate
        wait = min(wake - now, self.max_wait_s, audio_left_s - self.margin_s)
        return max(wait, 0.0)
