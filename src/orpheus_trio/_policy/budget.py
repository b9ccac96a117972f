"""The hedge and failover budget: extra attempts stay a small share of requests.

Sans-IO, in the manner of Finagle's and gRPC's retry budgets: every request
deposits ``ratio`` of an extra attempt, every hedge or failover withdraws one,
and a small floor (``min_extra`` per window) keeps a quiet client able to fail
over at all. Both deposits and withdrawals age out after ``window_s``, so a
burst of failures cannot turn into a retry storm that outlives it.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RetryBudget"]


class RetryBudget:
    """Allow at most ``ratio`` extra attempts per request over a sliding window, plus a floor."""

    def __init__(
        self, ratio: float = 0.1, *, window_s: float = 10.0, min_extra: int = 3
    ) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be within [0, 1], got {ratio!r}")
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        if min_extra < 0:
            raise ValueError(f"min_extra must be >= 0, got {min_extra!r}")
        self.ratio = ratio
        self.window_s = window_s
        self.min_extra = min_extra
        self._requests: deque[float] = deque()
        self._extras: deque[float] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        for times in (self._requests, self._extras):
            while times and times[0] <= horizon:
                times.popleft()

    def record_request(self, now: float) -> None:
        """A new user request (not an extra attempt) started."""
        self._expire(now)
        self._requests.append(now)

    def available(self, now: float) -> int:
        """How many extra attempts may start now."""
        self._expire(now)
        allowed = self.min_extra + math.floor(self.ratio * len(self._requests) + 1e-9)
        return max(0, allowed - len(self._extras))

    def try_spend(self, now: float) -> bool:
        """Withdraw one extra attempt if the budget allows; say whether it did."""
        if self.available(now) < 1:
            return False
        self._extras.append(now)
        return True
