"""The race, on MockClock(autojump_threshold=0) with scripted fake endpoints: exact timings."""

from __future__ import annotations

import random

import httpx
import pytest
import trio
import trio.testing
from _support_client import (
    FakeTransport,
    Script,
    expected_audio,
    in_band_error,
    in_order,
    per_endpoint,
    speech,
    status,
)

from orpheus_trio import (
    Breaker,
    CircuitOpenError,
    DeadlineExceeded,
    HTTPStatusError,
    Hedging,
    IncompleteStreamError,
    OrpheusTTS,
)
from orpheus_trio.errors import ProtocolError, ServiceError
from orpheus_trio.protocol.frames import encode_chunk
from orpheus_trio.hedge import race

A, B, C = "http://a:1", "http://b:1", "http://c:1"


def client(
    transport: FakeTransport, urls: list[str] | None = None, **options: object
) -> OrpheusTTS:
    options.setdefault("rng", random.Random(0))
    return OrpheusTTS(urls or [A, B], hedge_ttfb_ms=400, transport=transport, **options)  # type: ignore[arg-type]


def relative(times: list[float], t0: float) -> list[float]:
    return [round(t - t0, 9) for t in times]


async def test_backup_starts_exactly_at_hedge_delay_and_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(speech(1, first_after=1.0), speech(100, first_after=0.05))
    )
    tts = client(fake)
    t0 = trio.current_time()
    async with tts.open_stream("hello") as audio:
        assert audio.endpoint == fake.started[1].endpoint
        assert audio.ttfb_s == pytest.approx(0.45)
        got = b"".join([pcm async for pcm in audio])
    assert relative(fake.start_times, t0) == [0.0, 0.4]
    assert fake.started[0].endpoint != fake.started[1].endpoint
    assert got == expected_audio(100)
    loser = fake.started[0].response
    assert loser is not None and loser.closed_at == pytest.approx(t0 + 0.45)
    assert loser.bytes_sent == 0


async def test_single_endpoint_is_hedged_against_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(speech(1, first_after=5.0), speech(50, first_after=0.1))
    )
    t0 = trio.current_time()
    got = await client(fake, [A]).synthesize("hi")
    assert [s.endpoint for s in fake.started] == [A, A]
    assert relative(fake.start_times, t0) == [0.0, 0.4]
    assert got == expected_audio(50)


async def test_failure_before_first_byte_starts_next_attempt_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(
            Script(headers_after=0.1, fail=httpx.ConnectError("refused")),
            speech(7, first_after=0.05),
        )
    )
    t0 = trio.current_time()
    got = await client(fake).synthesize("hi")
    assert relative(fake.start_times, t0) == [0.0, 0.1]
    assert got == expected_audio(7)


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
async def test_retryable_status_fails_over_at_once(
    autojump_clock: trio.testing.MockClock, code: int
) -> None:
    fake = FakeTransport(
        in_order(status(code, "busy", after=0.2), speech(9, first_after=0.05))
    )
    t0 = trio.current_time()
    assert await client(fake).synthesize("hi") == expected_audio(9)
    assert relative(fake.start_times, t0) == [0.0, 0.2]


async def test_cut_before_first_chunk_fails_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cut = Script(body=[(0.1, b'{"type":"metrics","queue_depth":1}\n')])
    fake = FakeTransport(in_order(cut, speech(3, first_after=0.05)))
    t0 = trio.current_time()
    assert await client(fake).synthesize("hi") == expected_audio(3)
    assert relative(fake.start_times, t0) == [0.0, 0.1]


@pytest.mark.parametrize(
    ("code", "error_code"),
    [(400, "invalid_param"), (401, "unauthorized"), (413, "text_too_long")],
)
async def test_client_errors_raise_without_failover(
    autojump_clock: trio.testing.MockClock, code: int, error_code: str
) -> None:
    fake = FakeTransport(in_order(status(code, error_code, "bad temperature")))
    with pytest.raises(HTTPStatusError) as caught:
        await client(fake).synthesize("hi")
    assert len(fake.started) == 1
    error = caught.value
    assert isinstance(error, httpx.HTTPStatusError)
    assert (error.status_code, error.code, error.message) == (
        code,
        error_code,
        "bad temperature",
    )
    assert error.response.status_code == code


async def test_fatal_error_cancels_the_hedge_and_closes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(
            Script(headers_after=0.1, body=[(5.0, b"")]),
            status(401, "unauthorized", after=0.2),
        )
    )
    with pytest.raises(HTTPStatusError, match="unauthorized"):
        await client(fake).synthesize("hi")
    first = fake.started[0].response
    assert first is not None and first.closed_at is not None


async def test_loser_that_gets_audio_later_is_closed_and_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A answers first (0.5), after B (the hedge at 0.4) started but before B's audio at 0.6.
    fake = FakeTransport(
        in_order(speech(1, first_after=0.5), speech(100, first_after=0.2))
    )
    tts = client(fake)
    got = await tts.synthesize("hi")
    assert got == expected_audio(1)
    loser = fake.started[1].response
    assert loser is not None and loser.closed_at is not None and loser.bytes_sent == 0
    assert [e.in_flight for e in tts.endpoints()] == [0, 0]


async def test_simultaneous_first_chunks_yield_one_attempt_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(speech(1, first_after=0.6), speech(100, first_after=0.2))
    )
    got = await client(fake).synthesize("hi")
    assert got in (expected_audio(1), expected_audio(100))
    responses = fake.responses()
    assert all(r.closed_at is not None for r in responses)
    assert [e.in_flight for e in client(fake).endpoints()] == [0, 0]


async def test_budget_stops_hedging(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeTransport(lambda endpoint, n: speech(n, first_after=1.0))
    tts = client(fake, hedging=Hedging(budget_ratio=0.0, budget_min=1))
    await tts.synthesize("one")
    assert len(fake.started) == 2  # the floor paid for one hedge
    t0 = trio.current_time()
    async with tts.open_stream("two") as audio:
        assert audio.ttfb_s == pytest.approx(1.0)
        assert audio.attempts == 1
    assert relative(fake.start_times[2:], t0) == [0.0]


async def test_hedging_off_keeps_failover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(status(503, "draining", after=0.7), speech(4, first_after=2.0))
    )
    t0 = trio.current_time()
    tts = OrpheusTTS([A, B], hedge_ttfb_ms=None, transport=fake, rng=random.Random(0))
    assert await tts.synthesize("hi") == expected_audio(4)
    assert relative(fake.start_times, t0) == [0.0, 0.7]


async def test_all_attempts_fail_raises_most_relevant_from_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(
            Script(fail=httpx.ConnectError("refused")),
            status(503, "unavailable", after=0.1),
            Script(headers_after=0.1, fail=httpx.ReadTimeout("slow")),
        )
    )
    with pytest.raises(HTTPStatusError) as caught:
        await client(fake, [A, B, C]).synthesize("hi")
    assert caught.value.status_code == 503
    group = caught.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [type(e) for e in group.exceptions] == [
        httpx.ConnectError,
        HTTPStatusError,
        httpx.ReadTimeout,
    ]
    assert len(fake.started) == 3


async def test_single_failed_attempt_raises_its_own_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(Script(fail=httpx.ConnectError("refused"))))
    with pytest.raises(httpx.ConnectError):
        await client(fake, [A], hedging=Hedging(max_attempts=1)).synthesize("hi")


async def test_no_retry_after_first_chunk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cut = Script(
        body=[(0.1, encode_chunk(0, b"\x01\x02"))], body_error=httpx.ReadError("reset")
    )
    fake = FakeTransport(in_order(cut))
    received: list[bytes] = []
    with pytest.raises(IncompleteStreamError) as caught:
        async for pcm in client(fake).stream("hi"):
            received.append(pcm)
            await trio.sleep(1.0)  # long past the hedge delay: still no second attempt
    assert received == [b"\x01\x02"]
    assert caught.value.chunks_received == 1
    assert isinstance(caught.value, httpx.RemoteProtocolError)
    assert len(fake.started) == 1


async def test_body_ending_without_eos_after_audio_raises_incomplete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(Script(body=[(0.1, encode_chunk(0, b"ab"))])))
    received = []
    with pytest.raises(IncompleteStreamError):
        async for pcm in client(fake).stream("hi"):
            received.append(pcm)
    assert received == [b"ab"]


async def test_protocol_error_mid_stream_raises_without_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(
            Script(body=[(0.1, encode_chunk(0, b"ab")), (0.1, encode_chunk(5, b"cd"))])
        )
    )
    with pytest.raises(ProtocolError, match="line 2"):
        await client(fake).synthesize("hi")
    assert len(fake.started) == 1


async def test_in_band_errors(autojump_clock: trio.testing.MockClock) -> None:
    late = Script(
        body=[
            (0.1, encode_chunk(0, b"ab")),
            *in_band_error("engine_error", "gpu fell over").body,
        ]
    )
    with pytest.raises(ServiceError) as caught:
        await client(FakeTransport(in_order(late))).synthesize("hi")
    assert (caught.value.code, caught.value.message) == (
        "engine_error",
        "gpu fell over",
    )

    with pytest.raises(DeadlineExceeded) as deadline:
        await client(
            FakeTransport(in_order(in_band_error("deadline_exceeded")))
        ).synthesize("hi")
    assert isinstance(deadline.value, trio.TooSlowError)


async def test_in_band_engine_error_before_audio_fails_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(in_band_error("engine_error", after=0.1), speech(5, first_after=0.1))
    )
    t0 = trio.current_time()
    assert await client(fake).synthesize("hi") == expected_audio(5)
    assert relative(fake.start_times, t0) == [0.0, 0.1]


async def test_client_deadline_before_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(lambda endpoint, n: speech(n, first_after=10.0))
    t0 = trio.current_time()
    with pytest.raises(DeadlineExceeded) as caught:
        await client(fake).synthesize("hi", timeout_s=1.0)
    assert isinstance(caught.value, trio.TooSlowError)
    assert trio.current_time() - t0 == pytest.approx(1.0)
    assert fake.started[0].body["timeout_s"] == 1.0
    assert fake.started[1].body["timeout_s"] == 0.6  # the hedge sends what is left
    assert all(r.closed_at is not None for r in fake.responses())


async def test_client_deadline_mid_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(
            Script(body=[(0.1, encode_chunk(0, b"ab")), (9.0, encode_chunk(1, b"cd"))])
        )
    )
    received = []
    t0 = trio.current_time()
    with pytest.raises(DeadlineExceeded):
        async for pcm in client(fake).stream("hi", timeout_s=2.0):
            received.append(pcm)
    assert received == [b"ab"]
    assert trio.current_time() - t0 == pytest.approx(2.0)
    assert (
        fake.started[0].response is not None
        and fake.started[0].response.closed_at is not None
    )


async def test_breaker_opens_then_half_open_probe_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        per_endpoint({A: [status(500, "internal")] * 5 + [speech(1, first_after=0.1)]})
    )
    tts = OrpheusTTS(
        A,
        hedge_ttfb_ms=None,
        hedging=Hedging(max_attempts=1),
        transport=fake,
        rng=random.Random(0),
    )
    for _ in range(5):
        with pytest.raises(HTTPStatusError):
            await tts.synthesize("hi")
    (snapshot,) = tts.endpoints()
    assert snapshot.breaker_state == "open" and snapshot.failures == 5
    with pytest.raises(
        CircuitOpenError, match="Circuit open for endpoint http://a:1"
    ) as caught:
        await tts.synthesize("hi")
    assert isinstance(caught.value, RuntimeError)
    assert len(fake.started) == 5  # nothing was sent
    assert caught.value.retry_in_s is not None and 4.0 <= caught.value.retry_in_s <= 5.0
    await trio.sleep(caught.value.retry_in_s)
    assert tts.endpoints()[0].breaker_state == "half_open"
    assert await tts.synthesize("hi") == expected_audio(1)
    assert tts.endpoints()[0].breaker_state == "closed"


async def test_busy_statuses_do_not_trip_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(status(429, "overloaded", **{"Retry-After": "2"})))
    tts = OrpheusTTS(A, hedge_ttfb_ms=None, hedging=Hedging(max_attempts=1), transport=fake)
    for _ in range(6):
        with pytest.raises(HTTPStatusError) as caught:
            await tts.synthesize("hi")
    assert caught.value.retry_after_s == 2.0
    assert tts.endpoints()[0].breaker_state == "closed"


async def test_open_endpoint_is_skipped_for_healthy_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        per_endpoint(
            {
                A: [Script(fail=httpx.ConnectError("down"))],
                B: [speech(2, first_after=0.1)],
            }
        )
    )
    tts = client(fake, breaker=Breaker(failures=1), hedging=Hedging(budget_min=100))
    for _ in range(3):
        assert await tts.synthesize("hi") == expected_audio(2)
    assert [s.endpoint for s in fake.started].count(A) == 1


async def test_caller_cancellation_closes_every_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(lambda endpoint, n: speech(n, first_after=10.0))
    tts = client(fake)
    with trio.move_on_after(1.0):
        await tts.synthesize("hi")
    assert len(fake.started) == 3
    assert all(r.closed_at is not None for r in fake.responses())
    assert [e.in_flight for e in tts.endpoints()] == [0, 0]


async def test_simultaneous_requests_spread_over_cold_endpoints(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(lambda endpoint, n: speech(n, first_after=0.1))
    tts = client(fake, [A, B, C])
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(tts.synthesize, "hi")
    assert sorted(s.endpoint for s in fake.started) == [A, B, C]


async def test_half_open_probe_is_taken_by_one_request_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        per_endpoint(
            {A: [Script(fail=httpx.ConnectError("down")), speech(1, first_after=0.5)]}
        )
    )
    tts = OrpheusTTS(
        A,
        hedge_ttfb_ms=None,
        hedging=Hedging(max_attempts=1),
        breaker=Breaker(failures=1),
        transport=fake,
        rng=random.Random(0),
    )
    with pytest.raises(httpx.ConnectError):
        await tts.synthesize("hi")
    await trio.sleep(tts.endpoints()[0].breaker_retry_in_s)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await tts.synthesize("hi")
            outcomes.append("audio")
        except CircuitOpenError:
            outcomes.append("open")

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert sorted(outcomes) == ["audio", "open", "open"]
    assert len(fake.started) == 2


class BrokenPlan:
    """A plan whose policy raises: the error must surface bare, not in a group."""

    def next_attempt(self, reason: str) -> None:
        raise KeyError("policy bug")

    def is_retryable(self, error: Exception) -> bool:
        return True

    async def discard(self, result: object) -> None:
        raise AssertionError("nothing to discard")


async def test_race_surfaces_a_policy_error_bare(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def attempt() -> None:
        raise httpx.ConnectError("refused")

    with pytest.raises(KeyError, match="policy bug"):
        await race(attempt, BrokenPlan(), hedge_delay_s=0.4)  # type: ignore[arg-type]


async def test_each_hedge_waits_its_own_delay_up_to_max_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(
            speech(1, first_after=5.0),
            speech(2, first_after=5.0),
            speech(3, first_after=0.3),
        )
    )
    t0 = trio.current_time()
    assert await client(fake, [A, B, C]).synthesize("hi") == expected_audio(3)
    assert relative(fake.start_times, t0) == [0.0, 0.4, 0.8]
    assert len({s.endpoint for s in fake.started}) == 3
    assert all(r.closed_at == pytest.approx(t0 + 1.1) for r in fake.responses()[:2])


async def test_all_attempts_failed_keeps_every_attempts_own_cause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each ConnectError carries the OSError under it; raising the chosen error
    # `from` a group that holds it would overwrite its own cause (and loop).
    def refused(n: int) -> httpx.ConnectError:
        try:
            raise httpx.ConnectError(f"refused {n}") from OSError(111, f"os says no {n}")
        except httpx.ConnectError as error:
            return error

    fake = FakeTransport(in_order(Script(fail=refused(0)), Script(fail=refused(1))))
    with pytest.raises(httpx.ConnectError, match="refused 1") as caught:
        await client(fake, [A, B], hedging=Hedging(max_attempts=2)).synthesize("hi")
    group = caught.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert caught.value not in group.exceptions  # a fresh error, as Happy Eyeballs raises
    causes = [e.__cause__ for e in group.exceptions]
    assert [str(c) for c in causes] == ["[Errno 111] os says no 0", "[Errno 111] os says no 1"]
    assert all(isinstance(c, OSError) for c in causes)
