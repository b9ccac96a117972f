"""Endpoint scores and the choice of endpoint (sans-IO; the caller passes ``now``).

Each endpoint's time to first audio is tracked as a peak-EWMA (as in Finagle's
load balancer): a sample above the estimate replaces it at once, a lower one
pulls it down smoothly with time constant ``decay_s``. The score is that
latency times the load the request would join,
``latency * (1 + in_flight + queue_hint)``; lower is better. ``in_flight`` is
this client's own open attempts; ``queue_hint`` is the server's last reported
queue depth (``X-Queue-Depth`` header, ``metrics`` frames), fading with
``hint_decay_s`` because it goes stale.

Cold endpoints (no sample yet) are tried first while idle, so a new or
recovered endpoint gets measured; once busy they are scored with the best warm
latency, so load is not herded onto them. The first attempt of a request
uses power of two choices (two random candidates, the better wins) to spread
load; hedges and failovers take the best remaining candidate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_COLD_LATENCY_S", "Router"]

#: Latency assumed for a busy cold endpoint when no endpoint has a sample yet.
DEFAULT_COLD_LATENCY_S = 0.1
#: Least time to first audio a failed attempt counts as (twice the slowest warm estimate if higher).
FAILURE_PENALTY_S = 1.0


@dataclass
class _Stats:
    latency_s: float | None = None
    latency_at: float = 0.0
    queue_hint: float = 0.0
    queue_hint_at: float = 0.0
    in_flight: int = 0


class Router:
    """Scores endpoints from observed latency, queue hints and local in-flight; picks one."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        decay_s: float = 10.0,
        hint_decay_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("need at least one endpoint")
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("endpoints must be distinct")
        if decay_s <= 0 or hint_decay_s <= 0:
            raise ValueError("decay_s and hint_decay_s must be positive")
        self.endpoints: tuple[str, ...] = tuple(endpoints)
        self.decay_s = decay_s
        self.hint_decay_s = hint_decay_s
        self._rng = rng if rng is not None else random.Random()
        self._stats = {endpoint: _Stats() for endpoint in endpoints}

    # -- observations -------------------------------------------------------

    def on_start(self, endpoint: str) -> None:
        """An attempt to ``endpoint`` started."""
        self._stats[endpoint].in_flight += 1

    def on_end(self, endpoint: str) -> None:
        """An attempt to ``endpoint`` ended (won and finished, lost, or failed)."""
        stats = self._stats[endpoint]
        stats.in_flight = max(0, stats.in_flight - 1)

    def observe_ttfb(self, endpoint: str, ttfb_s: float, now: float) -> None:
        """Audio arrived ``ttfb_s`` after the attempt started."""
        stats = self._stats[endpoint]
        if stats.latency_s is None or ttfb_s >= stats.latency_s:
            stats.latency_s = ttfb_s
        else:
            keep = math.exp(-max(0.0, now - stats.latency_at) / self.decay_s)
            stats.latency_s = stats.latency_s * keep + ttfb_s * (1.0 - keep)
        stats.latency_at = now

    def observe_no_audio_after(
        self, endpoint: str, waited_s: float, now: float
    ) -> None:
        """An attempt was abandoned after ``waited_s`` without audio: its TTFB is at least that.

        Only raises the estimate (a censored sample says nothing about fast answers).
        """
        stats = self._stats[endpoint]
        if stats.latency_s is None or waited_s > stats.latency_s:
            stats.latency_s = waited_s
            stats.latency_at = now

    def observe_failure(self, endpoint: str, now: float) -> None:
        """An attempt there failed before any audio: count it as a slow sample.

        Otherwise a dead endpoint never gets a sample, stays cold, and every
        request tries it first (each paying a failover) until its breaker opens.
        """
        warm = [s.latency_s for s in self._stats.values() if s.latency_s is not None]
        penalty = max([FAILURE_PENALTY_S, *(2.0 * latency for latency in warm)])
        self.observe_no_audio_after(endpoint, penalty, now)

    def observe_queue_depth(self, endpoint: str, depth: float, now: float) -> None:
        """The server reported ``depth`` requests queued plus running."""
        if depth < 0 or not math.isfinite(depth):
            return  # a nonsense hint must not poison the score
        stats = self._stats[endpoint]
        stats.queue_hint = float(depth)
        stats.queue_hint_at = now

    # -- reading ------------------------------------------------------------

    def latency_estimate_s(self, endpoint: str) -> float | None:
        """Peak-EWMA time to first audio, or ``None`` while the endpoint is cold."""
        return self._stats[endpoint].latency_s

    def queue_hint(self, endpoint: str, now: float) -> float:
        """The server's last queue depth, faded by its age."""
        stats = self._stats[endpoint]
        age = max(0.0, now - stats.queue_hint_at)
        return stats.queue_hint * math.exp(-age / self.hint_decay_s)

    def in_flight(self, endpoint: str) -> int:
        return self._stats[endpoint].in_flight

    def is_cold(self, endpoint: str) -> bool:
        return self._stats[endpoint].latency_s is None

    def score(self, endpoint: str, now: float) -> float:
        """Expected cost of sending one more request there; lower is better."""
        stats = self._stats[endpoint]
        latency = stats.latency_s
        if latency is None:
            if stats.in_flight == 0:
                return 0.0
            warm = [
                s.latency_s for s in self._stats.values() if s.latency_s is not None
            ]
            latency = min(warm) if warm else DEFAULT_COLD_LATENCY_S
        return latency * (1.0 + stats.in_flight + self.queue_hint(endpoint, now))

    # -- choosing -----------------------------------------------------------

    def choose(
        self,
        now: float,
        *,
        allowed: Iterable[str] | None = None,
        exclude: Collection[str] = (),
        spread: bool = True,
    ) -> str | None:
        """Pick an endpoint among ``allowed`` minus ``exclude``; ``None`` if none is left.

        ``spread=True`` (a request's first attempt) uses power of two choices;
        ``spread=False`` (hedges, failovers) takes the best score.
        """
        pool = self.endpoints if allowed is None else tuple(allowed)
        candidates = [e for e in pool if e not in exclude]
        if not candidates:
            return None
        idle_cold = [
            e for e in candidates if self.is_cold(e) and self.in_flight(e) == 0
        ]
        if idle_cold:
            return idle_cold[0] if not spread else self._rng.choice(idle_cold)
        if spread and len(candidates) > 2:
            candidates = self._rng.sample(candidates, 2)
        return min(candidates, key=lambda e: self.score(e, now))
