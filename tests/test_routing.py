import math
import random

import pytest

from orpheus_trio._policy.routing import DEFAULT_COLD_LATENCY_S, Router

A, B, C = "http://a", "http://b", "http://c"


def test_peak_ewma_jumps_up_and_decays_down() -> None:
    router = Router([A], decay_s=10.0)
    router.observe_ttfb(A, 0.1, now=0.0)
    assert router.latency_estimate_s(A) == 0.1
    router.observe_ttfb(A, 0.5, now=1.0)
    assert router.latency_estimate_s(A) == 0.5  # a peak is taken at once
    router.observe_ttfb(A, 0.1, now=11.0)
    keep = math.exp(-1.0)
    assert router.latency_estimate_s(A) == pytest.approx(0.5 * keep + 0.1 * (1 - keep))


def test_score_multiplies_latency_by_load() -> None:
    router = Router([A], hint_decay_s=5.0)
    router.observe_ttfb(A, 0.2, now=0.0)
    router.on_start(A)
    router.on_start(A)
    router.observe_queue_depth(A, 3, now=0.0)
    assert router.score(A, 0.0) == pytest.approx(0.2 * (1 + 2 + 3))
    assert router.queue_hint(A, 5.0) == pytest.approx(3 * math.exp(-1.0))
    router.on_end(A)
    assert router.in_flight(A) == 1


def test_cold_idle_endpoint_is_tried_first() -> None:
    router = Router([A, B], rng=random.Random(1))
    router.observe_ttfb(A, 0.01, now=0.0)
    assert router.score(B, 0.0) == 0.0
    assert router.choose(0.0) == B
    assert router.choose(0.0, spread=False) == B


def test_busy_cold_endpoint_is_scored_with_best_warm_latency() -> None:
    router = Router([A, B, C])
    router.observe_ttfb(A, 0.3, now=0.0)
    router.observe_ttfb(B, 0.2, now=0.0)
    router.on_start(C)
    assert router.score(C, 0.0) == pytest.approx(0.2 * 2)
    lonely = Router([A])
    lonely.on_start(A)
    assert lonely.score(A, 0.0) == pytest.approx(DEFAULT_COLD_LATENCY_S * 2)


def test_backup_choice_takes_best_untried() -> None:
    router = Router([A, B, C])
    for endpoint, latency in ((A, 0.1), (B, 0.3), (C, 0.2)):
        router.observe_ttfb(endpoint, latency, now=0.0)
    assert router.choose(0.0, exclude=[A], spread=False) == C
    assert router.choose(0.0, exclude=[A, B, C], spread=False) is None
    assert router.choose(0.0, allowed=[B], spread=False) == B


def test_power_of_two_choices_spreads_and_avoids_the_worst() -> None:
    router = Router([A, B, C], rng=random.Random(7))
    for endpoint, latency in ((A, 0.1), (B, 0.1), (C, 1.0)):
        router.observe_ttfb(endpoint, latency, now=0.0)
    picks = [router.choose(0.0) for _ in range(300)]
    assert C not in picks  # the worst of three never wins a pair
    assert picks.count(A) > 50 and picks.count(B) > 50  # equals share the load


def test_abandoned_attempt_raises_estimate_only() -> None:
    router = Router([A])
    router.observe_ttfb(A, 0.5, now=0.0)
    router.observe_no_audio_after(A, 0.2, now=1.0)
    assert router.latency_estimate_s(A) == 0.5
    router.observe_no_audio_after(A, 0.9, now=1.0)
    assert router.latency_estimate_s(A) == 0.9


def test_nonsense_queue_hint_ignored_and_bad_setup_rejected() -> None:
    router = Router([A])
    router.observe_queue_depth(A, -1, now=0.0)
    router.observe_queue_depth(A, float("nan"), now=0.0)
    assert router.queue_hint(A, 0.0) == 0.0
    with pytest.raises(ValueError):
        Router([])
    with pytest.raises(ValueError):
        Router([A, A])
