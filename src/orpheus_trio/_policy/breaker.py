"""Per-endpoint circuit breaker (sans-IO; the caller passes ``now``).

closed --N consecutive failures--> open --cooldown--> half-open --probe ok--> closed
                                     ^                     |
                                     +----probe failed-----+

The cooldown doubles with every consecutive opening, from ``base_cooldown_s``
up to ``max_cooldown_s``, and is shortened by up to ``jitter`` (a fraction,
drawn from the injected RNG) so that many clients do not probe in lockstep.
Half-open lets exactly one probe through at a time.
"""

from __future__ import annotations

import enum
import random
from typing import Protocol

__all__ = ["BreakerState", "CircuitBreaker", "RandomSource"]


class RandomSource(Protocol):
    """What the breaker needs from an RNG (``random.Random`` fits)."""

    def random(self) -> float: ...


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; one probe at a time when half-open."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        base_cooldown_s: float = 5.0,
        max_cooldown_s: float = 60.0,
        jitter: float = 0.2,
        rng: RandomSource | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(
                f"failure_threshold must be >= 1, got {failure_threshold!r}"
            )
        if not 0 < base_cooldown_s <= max_cooldown_s:
            raise ValueError("need 0 < base_cooldown_s <= max_cooldown_s")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be within [0, 1), got {jitter!r}")
        self.failure_threshold = failure_threshold
        self.base_cooldown_s = base_cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.jitter = jitter
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._openings = 0  # consecutive openings without a success in between
        self._open_until = 0.0
        self._probe_in_flight = False

    def state(self, now: float) -> BreakerState:
        """The state at ``now`` (an open breaker whose cooldown ended reads half-open)."""
        if self._state is BreakerState.OPEN and now >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def can_attempt(self, now: float) -> bool:
        """Whether an attempt may start now (does not reserve the half-open probe)."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._probe_in_flight

    def retry_in_s(self, now: float) -> float:
        """Seconds until an attempt may start (0 when one may start now)."""
        if self.can_attempt(now):
            return 0.0
        return max(0.0, self._open_until - now)

    def on_attempt(self, now: float) -> None:
        """An attempt starts; in half-open it is the single probe."""
        if not self.can_attempt(now):
            raise RuntimeError("attempt started while the circuit is open")
        if self.state(now) is BreakerState.HALF_OPEN:
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = True

    def on_success(self, now: float) -> None:
        """The endpoint answered well (audio arrived): close the circuit."""
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._openings = 0
        self._probe_in_flight = False

    def on_failure(self, now: float) -> None:
        """The endpoint failed an attempt (connect error, 5xx, cut before audio)."""
        self._consecutive_failures += 1
        if self._state is BreakerState.OPEN:
            return  # a straggler started before the circuit opened; the cooldown stands
        probe_failed = self._state is BreakerState.HALF_OPEN
        self._probe_in_flight = False
        if probe_failed or self._consecutive_failures >= self.failure_threshold:
            self._open(now)

    def on_abandoned(self, now: float) -> None:
        """An attempt ended without a verdict (cancelled as a hedge loser): free the probe."""
        self._probe_in_flight = False

    def _open(self, now: float) -> None:
        cooldown = min(self.max_cooldown_s, self.base_cooldown_s * 2.0**self._openings)
        cooldown *= 1.0 - self.jitter * self._rng.random()
        self._openings += 1
        self._state = BreakerState.OPEN
        self._open_until = now + cooldown
