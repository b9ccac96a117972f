"""Where each attempt of a client goes, and what its outcome teaches (sans-IO).

:class:`Attempts` owns a client's policy state: the
:class:`~orpheus_trio._policy.routing.Router`, the
:class:`~orpheus_trio._policy.budget.RetryBudget` and one
:class:`~orpheus_trio._policy.endpoints.Endpoint` (breaker and counts) per
endpoint. The I/O shell (:mod:`orpheus_trio.client`) tells it each event as
it happens, with the time it read once for that event: a request starts, an
attempt is wanted, an attempt failed or got its first audio, a server hinted
its queue, the winner's stream ended. Every decision (which endpoint, whether
another attempt may start, whom a failure blames) is made here, so it is
tested on exact numbers without a loop or a socket.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..errors import CircuitOpenError
from .breaker import CircuitBreaker
from .budget import RetryBudget
from .endpoints import Endpoint, EndpointSnapshot
from .failure import Blame, FailurePolicy
from .routing import Router

__all__ = ["Attempts", "Reason", "Tries"]

#: Why another attempt is wanted: no audio after the hedge delay, or the last attempt failed.
Reason = Literal["hedge", "failover"]


@dataclass(slots=True)
class Tries:
    """One request's attempts so far: the endpoints tried, in order, and where it may go."""

    deadline: float
    #: Only these endpoints may serve it (``None``: any).
    only: frozenset[str] | None = None
    tried: list[str] = field(default_factory=list)


def _number(value: object) -> float | None:
    """A JSON number as a float; anything else (bool, string, null) as ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class Attempts:
    """A client's routing, budget and breakers, fed the events of its attempts.

    ``max_attempts``: per request, the first included. The budget allows
    ``budget_ratio`` extra attempts per request plus ``budget_min`` per
    ``budget_window_s``. Each endpoint's breaker opens after
    ``breaker_failures`` consecutive failures, for ``base_cooldown_s``
    doubling up to ``max_cooldown_s``. ``failure`` judges every error.
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        max_attempts: int,
        budget_ratio: float,
        budget_min: int,
        budget_window_s: float,
        breaker_failures: int,
        base_cooldown_s: float,
        max_cooldown_s: float,
        failure: FailurePolicy,
        rng: random.Random,
    ) -> None:
        self.urls = urls
        self.max_attempts = max_attempts
        self.failure = failure
        self.router = Router(urls, rng=rng)
        self.budget = RetryBudget(budget_ratio, window_s=budget_window_s, min_extra=budget_min)
        self.endpoints = {
            url: Endpoint(
                url,
                CircuitBreaker(
                    failure_threshold=breaker_failures,
                    base_cooldown_s=base_cooldown_s,
                    max_cooldown_s=max_cooldown_s,
                    rng=rng,
                ),
            )
            for url in urls
        }

    # -- choosing -------------------------------------------------------------

    def allowed(self, now: float, only: Collection[str] | None = None) -> list[str]:
        """Endpoints an attempt may go to now: breaker closed (or probing), in
        ``only``; of those, the ones not inside a ``Retry-After`` if any are."""
        allowed = [
            record
            for record in self.endpoints.values()
            if record.breaker.can_attempt(now) and (only is None or record.url in only)
        ]
        ready = [record for record in allowed if record.busy_until <= now]
        return [record.url for record in (ready or allowed)]

    def start(self, now: float, *, deadline: float, only: frozenset[str] | None = None) -> Tries:
        """A request starts: count it for the budget, choose and reserve its first
        endpoint (load spread by two random choices); :class:`CircuitOpenError`
        when every breaker that may serve it is open."""
        self.budget.record_request(now)
        first = self.router.choose(now, allowed=self.allowed(now, only), spread=True)
        if first is None:
            candidates = [url for url in self.urls if only is None or url in only]
            retry_in = min(self.endpoints[url].breaker.retry_in_s(now) for url in candidates)
            raise CircuitOpenError(candidates, retry_in_s=retry_in)
        self._reserve(first, now)
        return Tries(deadline=deadline, only=only, tried=[first])

    def next(self, tries: Tries, reason: Reason, now: float) -> str | None:
        """The endpoint of another attempt, reserved, or ``None`` when none may start:
        ``max_attempts`` reached, the deadline passed, no endpoint allowed, or no
        budget. The best endpoint not tried yet; when every allowed one was tried,
        the best of them again (a gateway routes it elsewhere)."""
        if len(tries.tried) >= self.max_attempts or now >= tries.deadline:
            return None
        allowed = self.allowed(now, tries.only)
        endpoint = self.router.choose(now, allowed=allowed, exclude=tries.tried, spread=False)
        if endpoint is None:
            endpoint = self.router.choose(now, allowed=allowed, spread=False)
        if endpoint is None or not self.budget.try_spend(now):
            return None
        tries.tried.append(endpoint)
        self._reserve(endpoint, now)
        record = self.endpoints[endpoint]
        if reason == "hedge":
            record.hedges += 1
        else:
            record.failovers += 1
        return endpoint

    def _reserve(self, endpoint: str, now: float) -> None:
        """Count an attempt against ``endpoint`` as soon as it is chosen.

        Done at choice time, not when the attempt task runs, so that requests
        started in the same instant see each other (no herding onto one cold
        endpoint) and only one of them takes a half-open breaker's probe.
        """
        self.router.on_start(endpoint)
        record = self.endpoints[endpoint]
        record.breaker.on_attempt(now)
        record.attempts += 1

    # -- outcomes -------------------------------------------------------------

    def retryable(self, error: BaseException) -> bool:
        """Whether another attempt may succeed after ``error``."""
        return self.failure.retryable(error)

    def on_first_audio(self, endpoint: str, started: float, now: float) -> None:
        """An attempt started at ``started`` got its first audio at ``now``."""
        self.router.observe_ttfb(endpoint, now - started, now)
        self.endpoints[endpoint].breaker.on_success(now)

    def on_won(self, endpoint: str) -> None:
        """That attempt won its race (its stream goes to the caller)."""
        self.endpoints[endpoint].wins += 1

    def on_attempt_failed(
        self,
        endpoint: str,
        error: BaseException,
        started: float,
        now: float,
        *,
        cancelled: bool = False,
    ) -> None:
        """An attempt started at ``started`` failed (or, ``cancelled``, was
        abandoned) at ``now`` before its first audio."""
        record = self.endpoints[endpoint]
        self.router.on_end(endpoint)
        verdict = self.failure.judge(error)
        if verdict.blame is Blame.ENDPOINT:
            record.breaker.on_failure(now)
            record.failures += 1
            self.router.observe_failure(endpoint, now)
            return
        record.breaker.on_abandoned(now)
        if verdict.blame is Blame.BUSY:
            self.router.observe_failure(endpoint, now)
            if verdict.retry_after_s:
                record.busy_until = max(record.busy_until, now + verdict.retry_after_s)
        elif cancelled:
            # A lost race: no audio after this long says its time to first audio is more.
            self.router.observe_no_audio_after(endpoint, now - started, now)

    def on_released(self, endpoint: str, error: BaseException | None, now: float) -> None:
        """The winner's stream ended (``error``: how, if it failed)."""
        self.router.on_end(endpoint)
        if error is not None and self.failure.blames_endpoint(error):
            self.endpoints[endpoint].breaker.on_failure(now)
            self.endpoints[endpoint].failures += 1

    # -- hints ----------------------------------------------------------------

    def on_queue_header(self, endpoint: str, value: str | None, now: float) -> None:
        """The ``X-Queue-Depth`` header of a response (queued plus running); a
        malformed one is ignored, not fatal."""
        if value is None:
            return
        try:
            depth = float(value)
        except ValueError:
            return
        self.router.observe_queue_depth(endpoint, depth, now)

    def on_metrics(self, endpoint: str, values: Mapping[str, object], now: float) -> None:
        """A ``metrics`` frame's values. A frame splits the load the header sums:
        ``queue_depth`` waiting, ``inflight`` running; added, both hints mean the same."""
        depth = _number(values.get("queue_depth"))
        if depth is not None:
            load = depth + (_number(values.get("inflight")) or 0.0)
            self.router.observe_queue_depth(endpoint, load, now)

    # -- reading --------------------------------------------------------------

    def snapshots(self, now: float) -> list[EndpointSnapshot]:
        """Every endpoint's routing and breaker state, in ``urls`` order."""
        router = self.router
        return [
            EndpointSnapshot(
                url=record.url,
                score=router.score(record.url, now),
                latency_estimate_s=router.latency_estimate_s(record.url),
                queue_hint=router.queue_hint(record.url, now),
                in_flight=router.in_flight(record.url),
                breaker_state=record.breaker.state(now).value,
                breaker_retry_in_s=record.breaker.retry_in_s(now),
                attempts=record.attempts,
                wins=record.wins,
                failures=record.failures,
                hedges=record.hedges,
                failovers=record.failovers,
            )
            for record in self.endpoints.values()
        ]
