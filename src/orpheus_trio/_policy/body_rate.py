"""The minimum rate a response body must keep once it has started (sans-IO).

A read timeout restarts with every byte, so a server that sends one byte a
second is never cut off by it. This rule is a leaky bucket over the time the
client spends *waiting* in reads (time the caller spends away, not reading, is
backpressure, not the server's slowness): the bucket holds up to
``min_bytes``, drains at ``min_bytes / window_s`` per second of waiting and is
refilled by the bytes that arrive. A read that returns after the bucket ran
dry breaks the rule, so a body slower than ``min_bytes`` per ``window_s`` of
waiting ends at its first read past about ``window_s``; a burst buys at most one
window. Checking when a read returns costs no cancel scope per read; a server
that stops sending altogether is the read timeout's to end.

Before the body's first byte nothing is measured: that wait is the read
timeout's and the deadline's (a queued request may legitimately wait for its
first audio). Times come from the caller, so the rule is tested exactly.
"""

from __future__ import annotations

__all__ = ["BodyRate", "DEFAULT_MIN_RATE_BYTES", "DEFAULT_MIN_RATE_WINDOW_S"]

#: A chunk of audio is tens of KB; 1 KiB per 10 s only catches bodies that trickle.
DEFAULT_MIN_RATE_BYTES = 1024
DEFAULT_MIN_RATE_WINDOW_S = 10.0


class BodyRate:
    """``observe(waited_s, nbytes)`` after each read says whether the body keeps the rate."""

    __slots__ = ("min_bytes", "window_s", "_drain_per_s", "_level", "_started")

    def __init__(self, min_bytes: int, window_s: float) -> None:
        # Checked by Timeouts, which builds these: min_bytes >= 1, window_s positive, finite.
        self.min_bytes = min_bytes
        self.window_s = float(window_s)
        self._drain_per_s = min_bytes / self.window_s
        self._level = float(min_bytes)
        self._started = False

    def observe(self, waited_s: float, nbytes: int) -> bool:
        """A read that waited ``waited_s`` returned ``nbytes``: ``False`` if they came too late."""
        if not self._started:
            self._started = nbytes > 0  # the bucket starts full at the first byte
            return True
        left = self._level - waited_s * self._drain_per_s
        if left < 0:
            return False
        self._level = min(left + nbytes, float(self.min_bytes))
        return True

    @property
    def level(self) -> float:
        """Bytes of credit left in the bucket (``min_bytes`` before the first byte)."""
        return self._level
