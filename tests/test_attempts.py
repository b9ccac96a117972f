"""The sans-IO attempt bookkeeping (:class:`~orpheus_trio._policy.attempts.Attempts`),
driven by hand with exact times: where each attempt goes, what each outcome teaches
routing, the budget and the breakers. The client's timing tests (test_client.py,
test_hedge.py) check the same decisions through the I/O shell on a MockClock."""

from __future__ import annotations

import math
import random

import httpx
import pytest

from orpheus_trio._policy.attempts import Attempts
from orpheus_trio._policy.failure import FailurePolicy
from orpheus_trio._policy.routing import FAILURE_PENALTY_S
from orpheus_trio.errors import CircuitOpenError, HTTPStatusError, ServiceError

A, B, C = "http://a:1", "http://b:1", "http://c:1"
NO_DEADLINE = math.inf


class NoJitter(random.Random):
    """Breaker cooldowns without jitter (``random()`` is 0), choices still seeded."""

    def random(self) -> float:
        return 0.0


def attempts(urls: tuple[str, ...] = (A, B), **overrides: object) -> Attempts:
    settings: dict[str, object] = {
        "max_attempts": 3,
        "budget_ratio": 0.1,
        "budget_min": 3,
        "budget_window_s": 10.0,
        "breaker_failures": 2,
        "base_cooldown_s": 5.0,
        "max_cooldown_s": 60.0,
        "failure": FailurePolicy(),
        "rng": NoJitter(0),
        **overrides,
    }
    return Attempts(urls, **settings)  # type: ignore[arg-type]


def status_error(status: int, retry_after_s: float | None = None) -> HTTPStatusError:
    request = httpx.Request("POST", A + "/v1/tts/stream")
    return HTTPStatusError(
        status_code=status,
        code="x",
        message="x",
        request=request,
        response=httpx.Response(status, request=request),
        retry_after_s=retry_after_s,
    )


def state(policy: Attempts, url: str, now: float) -> dict[str, object]:
    (snapshot,) = [s for s in policy.snapshots(now) if s.url == url]
    return {
        "in_flight": snapshot.in_flight,
        "attempts": snapshot.attempts,
        "failures": snapshot.failures,
        "hedges": snapshot.hedges,
        "failovers": snapshot.failovers,
        "breaker": snapshot.breaker_state,
        "latency": snapshot.latency_estimate_s,
    }


def test_a_failover_goes_to_the_endpoint_not_tried_and_is_counted_as_one() -> None:
    policy = attempts()
    tries = policy.start(0.0, deadline=NO_DEADLINE, only=frozenset({A}))
    assert tries.tried == [A]
    assert state(policy, A, 0.0)["in_flight"] == 1 and state(policy, A, 0.0)["attempts"] == 1
    policy.on_attempt_failed(A, httpx.ConnectError("refused"), 0.0, 0.25)
    assert state(policy, A, 0.25) == {
        "in_flight": 0,
        "attempts": 1,
        "failures": 1,
        "hedges": 0,
        "failovers": 0,
        "breaker": "closed",
        "latency": FAILURE_PENALTY_S,  # a failure counts as a slow first audio
    }
    tries.only = None
    assert policy.next(tries, "failover", 0.25) == B
    assert tries.tried == [A, B]
    assert state(policy, B, 0.25)["failovers"] == 1 and state(policy, B, 0.25)["in_flight"] == 1
    assert policy.budget.available(0.25) == 2  # 3 per window, one spent


def test_a_hedge_is_counted_as_a_hedge_and_the_loser_teaches_a_lower_bound() -> None:
    policy = attempts()
    tries = policy.start(1.0, deadline=NO_DEADLINE, only=frozenset({A}))
    tries.only = None
    assert policy.next(tries, "hedge", 1.4) == B
    assert state(policy, B, 1.4)["hedges"] == 1
    policy.on_first_audio(B, 1.4, 1.5)
    policy.on_won(B)
    # The race cancels A: no audio for 0.75 s says its first audio takes at least that.
    policy.on_attempt_failed(A, KeyboardInterrupt(), 1.0, 1.75, cancelled=True)
    assert state(policy, A, 1.75)["latency"] == 0.75
    assert state(policy, B, 1.75)["latency"] == pytest.approx(0.1, abs=1e-12)
    assert state(policy, A, 1.75)["failures"] == 0  # a lost race blames nobody
    assert policy.snapshots(1.75)[1].wins == 1


def test_first_audio_feeds_the_peak_ewma_with_the_time_it_is_handed() -> None:
    policy = attempts((A,))
    policy.start(0.0, deadline=NO_DEADLINE)
    policy.on_first_audio(A, 0.0, 0.5)
    policy.on_released(A, None, 2.0)
    policy.start(10.0, deadline=NO_DEADLINE)
    policy.on_first_audio(A, 10.0, 10.1)  # lower: pulled down over 10 s (decay_s)
    keep = math.exp(-(10.1 - 0.5) / 10.0)
    assert policy.router.latency_estimate_s(A) == pytest.approx(0.5 * keep + 0.1 * (1 - keep))
    assert state(policy, A, 10.1)["in_flight"] == 1


def test_next_stops_at_max_attempts_the_deadline_and_the_budget() -> None:
    policy = attempts((A, B, C), max_attempts=2)
    tries = policy.start(0.0, deadline=NO_DEADLINE)
    assert policy.next(tries, "failover", 0.1) is not None
    assert policy.next(tries, "failover", 0.2) is None  # max_attempts = 2
    late = policy.start(0.0, deadline=5.0)
    assert policy.next(late, "failover", 5.0) is None  # the deadline passed, exactly
    assert len(late.tried) == 1

    tight = attempts((A, B), budget_ratio=0.0, budget_min=1, budget_window_s=10.0)
    first = tight.start(0.0, deadline=NO_DEADLINE)
    assert tight.next(first, "hedge", 0.4) is not None
    second = tight.start(1.0, deadline=NO_DEADLINE)
    assert tight.next(second, "hedge", 1.4) is None  # the window's one extra is spent
    third = tight.start(10.0, deadline=NO_DEADLINE)
    assert tight.next(third, "hedge", 10.4) is not None  # spent at 0.4: aged out at 10.4


def test_when_every_allowed_endpoint_was_tried_it_goes_again() -> None:
    policy = attempts((A,))
    tries = policy.start(0.0, deadline=NO_DEADLINE)
    policy.on_attempt_failed(A, ServiceError("internal", "boom"), 0.0, 0.1)
    assert policy.next(tries, "failover", 0.1) == A
    assert tries.tried == [A, A]


def test_breaker_opens_after_failures_and_the_circuit_error_says_when() -> None:
    policy = attempts((A, B))
    for t in (0.0, 1.0):
        policy.start(t, deadline=NO_DEADLINE, only=frozenset({A}))
        policy.on_attempt_failed(A, status_error(500), t, t + 0.5)
    assert state(policy, A, 1.5)["breaker"] == "open"
    assert policy.allowed(1.5) == [B]
    with pytest.raises(CircuitOpenError) as caught:
        policy.start(2.5, deadline=NO_DEADLINE, only=frozenset({A}))
    assert caught.value.endpoints == [A] and caught.value.retry_in_s == 4.0  # 1.5 + 5 - 2.5
    assert policy.allowed(6.5) == [A, B]  # half-open: one probe may go
    tries = policy.start(6.5, deadline=NO_DEADLINE, only=frozenset({A}))
    assert tries.tried == [A] and policy.allowed(6.5) == [B]  # the probe is taken


def test_retry_after_keeps_an_endpoint_out_until_exactly_then_without_its_breaker() -> None:
    policy = attempts()
    policy.start(0.0, deadline=NO_DEADLINE, only=frozenset({A}))
    policy.on_attempt_failed(A, status_error(429, retry_after_s=2.0), 0.0, 0.5)
    assert state(policy, A, 0.5)["breaker"] == "closed"
    assert state(policy, A, 0.5)["failures"] == 0
    assert policy.allowed(0.5) == [B] and policy.allowed(2.4999) == [B]
    assert policy.allowed(2.5) == [A, B]
    # With B gone too, A is allowed inside its Retry-After rather than nothing at all.
    assert policy.allowed(1.0, only=frozenset({A})) == [A]


def test_queue_hints_from_the_header_and_the_metrics_frame() -> None:
    policy = attempts()
    policy.on_queue_header(A, "3", 1.0)
    assert policy.router.queue_hint(A, 1.0) == 3.0
    assert policy.router.queue_hint(A, 6.0) == pytest.approx(3.0 * math.exp(-1.0))
    for bad in ("x", None, "-1", "nan"):
        policy.on_queue_header(A, bad, 6.0)
    assert policy.router.queue_hint(A, 6.0) == pytest.approx(3.0 * math.exp(-1.0))
    policy.on_metrics(B, {"queue_depth": 2, "inflight": 1}, 2.0)
    assert policy.router.queue_hint(B, 2.0) == 3.0
    policy.on_metrics(B, {"queue_depth": True, "inflight": 5}, 2.0)  # not a number
    policy.on_metrics(B, {"inflight": 5}, 2.0)  # no queue depth: no hint
    assert policy.router.queue_hint(B, 2.0) == 3.0
    policy.on_metrics(B, {"queue_depth": 4, "inflight": "many"}, 3.0)
    assert policy.router.queue_hint(B, 3.0) == 4.0


def test_the_winners_stream_ending_in_an_endpoint_fault_counts_against_it() -> None:
    policy = attempts((A,))
    policy.start(0.0, deadline=NO_DEADLINE)
    policy.on_first_audio(A, 0.0, 0.2)
    policy.on_released(A, httpx.ReadError("reset"), 3.0)
    assert state(policy, A, 3.0)["failures"] == 1 and state(policy, A, 3.0)["in_flight"] == 0
    policy.start(4.0, deadline=NO_DEADLINE)
    policy.on_released(A, ServiceError("invalid_param", "bad voice"), 4.5)  # the request's fault
    assert state(policy, A, 4.5)["failures"] == 1

