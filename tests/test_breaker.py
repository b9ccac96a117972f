import pytest

from orpheus_trio._policy.breaker import BreakerState, CircuitBreaker


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def tripped(breaker: CircuitBreaker, now: float, n: int = 5) -> None:
    for _ in range(n):
        breaker.on_attempt(now)
        breaker.on_failure(now)


def test_opens_after_five_consecutive_failures() -> None:
    breaker = CircuitBreaker(rng=FixedRandom(0.0))
    tripped(breaker, 0.0, 4)
    assert breaker.state(0.0) is BreakerState.CLOSED
    breaker.on_attempt(0.0)
    breaker.on_failure(1.0)
    assert breaker.state(1.0) is BreakerState.OPEN
    assert not breaker.can_attempt(1.0)
    assert breaker.retry_in_s(1.0) == pytest.approx(5.0)


def test_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(rng=FixedRandom(0.0))
    tripped(breaker, 0.0, 4)
    breaker.on_success(0.0)
    tripped(breaker, 0.0, 4)
    assert breaker.state(0.0) is BreakerState.CLOSED


def test_half_open_lets_one_probe_and_success_closes() -> None:
    breaker = CircuitBreaker(rng=FixedRandom(0.0))
    tripped(breaker, 0.0)
    assert breaker.state(4.999) is BreakerState.OPEN
    assert breaker.state(5.0) is BreakerState.HALF_OPEN
    breaker.on_attempt(5.0)
    assert not breaker.can_attempt(5.0)  # the single probe is out
    with pytest.raises(RuntimeError):
        breaker.on_attempt(5.0)
    breaker.on_success(5.5)
    assert breaker.state(5.5) is BreakerState.CLOSED
    assert breaker.can_attempt(5.5)


def test_failed_probe_reopens_with_doubled_cooldown_up_to_max() -> None:
    breaker = CircuitBreaker(rng=FixedRandom(0.0))
    tripped(breaker, 0.0)
    now, cooldowns = 0.0, []
    for _ in range(6):
        now += breaker.retry_in_s(now)
        breaker.on_attempt(now)
        breaker.on_failure(now)
        cooldowns.append(breaker.retry_in_s(now))
    assert cooldowns == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_jitter_shortens_cooldown_by_rng_fraction() -> None:
    breaker = CircuitBreaker(jitter=0.2, rng=FixedRandom(0.5))
    tripped(breaker, 0.0)
    assert breaker.retry_in_s(0.0) == pytest.approx(5.0 * (1 - 0.2 * 0.5))


def test_abandoned_probe_frees_the_slot() -> None:
    breaker = CircuitBreaker(rng=FixedRandom(0.0))
    tripped(breaker, 0.0)
    breaker.on_attempt(5.0)
    breaker.on_abandoned(5.1)
    assert breaker.can_attempt(5.1)
    assert breaker.state(5.1) is BreakerState.HALF_OPEN


def test_straggler_failure_does_not_extend_an_open_circuit() -> None:
    breaker = CircuitBreaker(rng=FixedRandom(0.0))
    tripped(breaker, 0.0)
    breaker.on_failure(3.0)
    assert breaker.retry_in_s(3.0) == pytest.approx(2.0)


def test_bad_settings_rejected() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(base_cooldown_s=10, max_cooldown_s=5)
    with pytest.raises(ValueError):
        CircuitBreaker(jitter=1.0)
