"""The sans-IO admission policy: limits, FIFO promotion, Retry-After, draining."""

from __future__ import annotations

import pytest

from orpheus_trio.server.admission import Admission, Rejected


def test_runs_up_to_the_limit_then_queues_then_rejects() -> None:
    admission = Admission(max_concurrency=2, max_queue=1)
    first, second, third = (admission.admit(0.0) for _ in range(3))
    assert (first.running, second.running, third.running) == (True, True, False)
    assert [t.depth_at_admission for t in (first, second, third)] == [1, 2, 3]
    with pytest.raises(Rejected) as rejected:
        admission.admit(0.0)
    assert (rejected.value.status, rejected.value.code) == (429, "overloaded")
    assert (admission.running, admission.queued, admission.depth) == (2, 1, 3)


def test_release_promotes_the_oldest_queued_ticket() -> None:
    admission = Admission(max_concurrency=1, max_queue=3)
    running = admission.admit(0.0)
    waiting = [admission.admit(float(i)) for i in range(1, 4)]
    assert admission.release(running, 5.0) == [waiting[0]]
    assert waiting[0].running and waiting[0].started_at == 5.0
    assert not waiting[1].running


def test_abandoned_queued_ticket_leaves_the_queue_without_promotion() -> None:
    admission = Admission(max_concurrency=1, max_queue=2)
    running = admission.admit(0.0)
    gone, stays = admission.admit(0.0), admission.admit(0.0)
    assert admission.release(gone, 1.0) == []
    assert admission.queued == 1
    assert admission.release(running, 2.0) == [stays]
    assert admission.release(running, 3.0) == []  # releasing twice is harmless


def test_retry_after_follows_the_mean_service_time() -> None:
    admission = Admission(max_concurrency=1, max_queue=0, smoothing=0.5)
    assert admission.retry_after_s() == 1  # nothing measured yet
    for start, end in ((0.0, 4.0), (10.0, 18.0)):
        ticket = admission.admit(start)
        admission.release(ticket, end)
    # Mean 4 then 4 + 0.5 * (8 - 4) = 6 s; one ticket ahead of the next slot.
    admission.admit(20.0)
    with pytest.raises(Rejected) as rejected:
        admission.admit(20.0)
    assert rejected.value.retry_after_s == 6


def test_draining_refuses_with_503() -> None:
    admission = Admission(max_concurrency=1, max_queue=1)
    admission.draining = True
    with pytest.raises(Rejected) as rejected:
        admission.admit(0.0)
    assert (rejected.value.status, rejected.value.code) == (503, "draining")


@pytest.mark.parametrize(("concurrency", "queue"), [(0, 1), (1, -1)])
def test_bad_limits_are_refused(concurrency: int, queue: int) -> None:
    with pytest.raises(ValueError):
        Admission(max_concurrency=concurrency, max_queue=queue)
