"""The client's settings as small frozen values that check themselves, like
``httpx.Timeout`` / ``httpx.Limits``: each default is written here once.

``OrpheusTTS(..., timeouts=Timeouts(connect_s=2), hedging=Hedging(ttfb_ms=250))``.
Two fields have a shorthand keyword on ``OrpheusTTS`` that sets that one field:
``hedge_ttfb_ms`` (``Hedging.ttfb_ms``) and ``timeout_s`` (``Timeouts.request_s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._policy.body_rate import DEFAULT_MIN_RATE_BYTES, DEFAULT_MIN_RATE_WINDOW_S, BodyRate
from .protocol.frames import DEFAULT_MAX_LINE_BYTES
from .transports.base import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
    DEFAULT_READ_TIMEOUT_S,
)

__all__ = [
    "Breaker",
    "Hedging",
    "Pool",
    "Timeouts",
    "is_positive_seconds",
    "positive_seconds",
]


def is_positive_seconds(value: object) -> bool:
    """Whether ``value`` is a positive, finite number of seconds (``True`` is no number)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    )


def positive_seconds(name: str, value: object, *, none_allowed: bool = True) -> float | None:
    """``value`` as float seconds if positive and finite (or ``None`` if allowed), else ``ValueError``."""
    if value is None and none_allowed:
        return None
    if not is_positive_seconds(value):
        also = " or None" if none_allowed else ""
        raise ValueError(f"{name} must be a positive number of seconds{also}, got {value!r}")
    assert isinstance(value, (int, float))
    return float(value)


@dataclass(frozen=True)
class Timeouts:
    """``request_s``: default per-request deadline (``None``: none);
    ``connect_s``: to open a connection; ``read_s``: between two reads
    (``None``: none); ``close_s``: to close a losing or abandoned response;
    ``min_rate_bytes`` per ``min_rate_window_s``: once a body has started, the
    least it must bring per that much time spent waiting for it, else
    :class:`~orpheus_trio.errors.SlowBodyError` (``None``: no minimum), so a
    server that trickles is cut off even without ``request_s``."""

    request_s: float | None = None
    connect_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_s: float | None = DEFAULT_READ_TIMEOUT_S
    close_s: float = 1.0
    min_rate_bytes: int | None = DEFAULT_MIN_RATE_BYTES
    min_rate_window_s: float = DEFAULT_MIN_RATE_WINDOW_S

    def __post_init__(self) -> None:
        # Checked here rather than failing late, inside the first request, with trio's message.
        positive_seconds("timeout_s (Timeouts.request_s)", self.request_s)
        positive_seconds("Timeouts.connect_s", self.connect_s, none_allowed=False)
        positive_seconds("Timeouts.read_s", self.read_s)
        close = self.close_s
        if not (
            isinstance(close, (int, float)) and close >= 0 and math.isfinite(close)
        ):
            raise ValueError(
                "Timeouts.close_s must be a finite number of seconds >= 0, "
                f"got {close!r}"
            )
        min_bytes = self.min_rate_bytes
        if min_bytes is not None and (
            isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 1
        ):
            raise ValueError(
                f"Timeouts.min_rate_bytes must be an integer >= 1 or None, got {min_bytes!r}"
            )
        positive_seconds("Timeouts.min_rate_window_s", self.min_rate_window_s, none_allowed=False)

    def body_rate(self) -> BodyRate | None:
        """A fresh minimum-rate rule for one response body (``None``: no minimum)."""
        if self.min_rate_bytes is None:
            return None
        return BodyRate(self.min_rate_bytes, self.min_rate_window_s)


@dataclass(frozen=True)
class Hedging:
    """``ttfb_ms``: start a backup attempt when no audio came this long after
    the last attempt started (``None`` or ``0``: no hedging; failover stays);
    ``max_attempts``: per request, the first included; the budget: extra
    attempts stay within ``budget_ratio`` of requests plus ``budget_min`` per
    ``budget_window_s``."""

    ttfb_ms: float | None = 400
    max_attempts: int = 3
    budget_ratio: float = 0.1
    budget_min: int = 3
    budget_window_s: float = 10.0

    def __post_init__(self) -> None:
        ttfb = self.ttfb_ms
        if ttfb is not None and (ttfb < 0 or not math.isfinite(ttfb)):
            raise ValueError(f"hedge_ttfb_ms (Hedging.ttfb_ms) must be >= 0 or None, got {ttfb!r}")
        if self.max_attempts < 1:
            raise ValueError(f"Hedging.max_attempts must be >= 1, got {self.max_attempts!r}")
        if not 0.0 <= self.budget_ratio <= 1.0:
            raise ValueError(
                f"Hedging.budget_ratio must be within [0, 1], got {self.budget_ratio!r}"
            )
        if self.budget_min < 0:
            raise ValueError(f"Hedging.budget_min must be >= 0, got {self.budget_min!r}")
        positive_seconds("Hedging.budget_window_s", self.budget_window_s, none_allowed=False)

    @property
    def delay_s(self) -> float | None:
        """The hedge delay in seconds, ``None`` when hedging is off."""
        return self.ttfb_ms / 1000.0 if self.ttfb_ms else None


@dataclass(frozen=True)
class Breaker:
    """Per-endpoint circuit breaker: opens after ``failures`` consecutive
    failures, for ``base_cooldown_s`` doubling up to ``max_cooldown_s``."""

    failures: int = 5
    base_cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"Breaker.failures must be >= 1, got {self.failures!r}")
        if not 0 < self.base_cooldown_s <= self.max_cooldown_s:
            raise ValueError("need 0 < Breaker.base_cooldown_s <= Breaker.max_cooldown_s")


@dataclass(frozen=True)
class Pool:
    """Connections kept per endpoint, and the longest NDJSON line accepted."""

    max_connections_per_endpoint: int = DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    def __post_init__(self) -> None:
        if self.max_connections_per_endpoint < 1:
            raise ValueError("Pool.max_connections_per_endpoint must be >= 1")
        if self.max_line_bytes < 1:
            raise ValueError("Pool.max_line_bytes must be >= 1")
