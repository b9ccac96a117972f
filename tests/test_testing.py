"""The public testing seam (``orpheus_trio.testing.MockTransport``), and client behaviour
tested through it: messages that say what to do, settings groups, Retry-After in routing."""

from __future__ import annotations

import dataclasses
import random

import httpx
import pytest
import trio
import trio.testing

from orpheus_trio import (
    Breaker,
    DeadlineExceeded,
    Hedging,
    HTTPStatusError,
    OrpheusTTS,
    Pool,
    ServiceError,
    Timeouts,
)

from orpheus_trio.testing import MockResponse, MockTransport
from orpheus_trio.transports.base import StreamRequest

A, B = "http://a.test", "http://b.test"
PCM = b"\x01\x02" * 4


async def test_a_handler_answers_each_request_and_sees_what_was_sent() -> None:
    def handler(request: StreamRequest) -> MockResponse:
        if request.json()["voice"] == "nobody":
            return MockResponse.error(400, "invalid_param", "unknown voice")
        return MockResponse.audio(PCM, b"\x03\x04")

    mock = MockTransport(handler)
    tts = OrpheusTTS(A, transport=mock)
    assert await tts.synthesize("Hello.", "tara") == PCM + b"\x03\x04"
    with pytest.raises(HTTPStatusError) as caught:
        await tts.synthesize("Hello.", "nobody")
    assert (caught.value.status_code, caught.value.code) == (400, "invalid_param")
    assert [r.json()["voice"] for r in mock.requests] == ["tara", "nobody"]
    assert mock.requests[0].url == A + "/v1/tts/stream"


async def test_an_async_handler_can_fail_like_a_network_and_the_client_fails_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: StreamRequest) -> MockResponse:
        await trio.sleep(0.1)
        if request.endpoint == A:
            raise httpx.ConnectError("refused")
        return MockResponse.in_band_error("invalid_param", "bad speed", after=[PCM])

    mock = MockTransport(handler)
    tts = OrpheusTTS([A, B], transport=mock, rng=random.Random(1))
    async with tts.open_stream("hi", endpoints=[A, B]) as audio:
        assert audio.endpoint == B
        assert await audio.__anext__() == PCM
        with pytest.raises(ServiceError, match="bad speed"):
            await audio.__anext__()
    assert {r.endpoint for r in mock.requests} == {A, B}
    with pytest.raises(TypeError, match="MockResponse"):
        await OrpheusTTS(A, transport=MockTransport(lambda r: b"")).synthesize("x")  # type: ignore[arg-type, return-value]


def test_a_url_with_the_stream_path_on_it_says_to_give_the_base_url() -> None:
    with pytest.raises(ValueError, match=r"give the base URL 'http://h:8000/api'"):
        OrpheusTTS("http://h:8000/api/v1/tts/stream")
    with pytest.raises(ValueError, match=r"give the base URL 'http://h:8000'"):
        OrpheusTTS(["http://ok:1", "http://h:8000/v1/tts/stream/"])


async def test_401_says_how_to_pass_a_key() -> None:
    refused = MockTransport(lambda r: MockResponse.error(401, "unauthorized", "bad key"))
    with pytest.raises(HTTPStatusError) as without:
        await OrpheusTTS(A, transport=refused).synthesize("hi")
    with pytest.raises(HTTPStatusError) as wrong:
        await OrpheusTTS(A, "k3y", transport=refused).synthesize("hi")
    assert "no API key was sent: pass api_key=..., or --api-key / ORPHEUS_KEY" in str(without.value)
    assert "the API key was refused" in str(wrong.value) and "ORPHEUS_KEY" in str(wrong.value)
    assert without.value.message == "bad key"  # the server's words, as they were


async def test_deadline_message_counts_one_attempt_in_the_singular(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def never(request: StreamRequest) -> MockResponse:
        await trio.sleep_forever()
        raise AssertionError

    tts = OrpheusTTS(
        A, hedge_ttfb_ms=None, hedging=Hedging(max_attempts=1), transport=MockTransport(never)
    )
    with pytest.raises(DeadlineExceeded, match=r"\(1 attempt\)$"):
        await tts.synthesize("hi", timeout_s=1)
    two = OrpheusTTS(A, hedge_ttfb_ms=500, transport=MockTransport(never))
    with pytest.raises(DeadlineExceeded, match=r"\(2 attempts\)$"):
        await two.synthesize("hi", timeout_s=0.8)


async def test_retry_after_keeps_requests_off_a_busy_endpoint_until_it_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = {A: 0, B: 0}

    async def handler(request: StreamRequest) -> MockResponse:
        calls[request.endpoint] += 1
        if request.endpoint == B:  # slower, and says it is loaded
            await trio.sleep(0.5)
            audio = MockResponse.audio(PCM)
            return dataclasses.replace(audio, headers={"X-Queue-Depth": "10"})
        if calls[A] == 2:
            return MockResponse.error(429, "overloaded", "busy", retry_after_s=5)
        return MockResponse.audio(PCM)

    tts = OrpheusTTS(
        [A, B],
        hedge_ttfb_ms=None,
        hedging=Hedging(max_attempts=1),
        transport=MockTransport(handler),
    )
    for only in (A, B):  # warm both: A fast, B slow and loaded
        async with tts.open_stream("hi", endpoints=[only]) as audio:
            assert [pcm async for pcm in audio] == [PCM]
    with pytest.raises(HTTPStatusError):
        async with tts.open_stream("hi", endpoints=[A]):
            pass
    # Scored alone, A (one failure) still beats loaded B; its Retry-After says wait.
    async with tts.open_stream("hi") as audio:
        assert audio.endpoint == B
    await trio.sleep(5)
    async with tts.open_stream("hi") as audio:
        assert audio.endpoint == A
    assert tts.endpoints()[0].breaker_state == "closed"  # busy is not broken


def test_settings_groups_check_themselves_and_match_the_flat_keywords() -> None:
    grouped = OrpheusTTS(
        A,
        timeouts=Timeouts(request_s=2.0, connect_s=1.0),
        hedging=Hedging(ttfb_ms=None, max_attempts=1),
        breaker=Breaker(failures=2),
        pool=Pool(max_connections_per_endpoint=4),
    )
    assert grouped.timeouts == Timeouts(request_s=2.0, connect_s=1.0)
    assert grouped.hedging == Hedging(ttfb_ms=None, max_attempts=1)
    assert grouped.breaker == Breaker(failures=2)
    assert grouped.pool == Pool(max_connections_per_endpoint=4)
    assert OrpheusTTS(A).hedging == Hedging() and Hedging().delay_s == 0.4
    # The shorthands set their one field of the group, and win over it.
    short = OrpheusTTS(
        A,
        None,
        None,  # hedge_ttfb_ms
        timeout_s=3.0,
        hedging=Hedging(ttfb_ms=250, max_attempts=2),
        timeouts=Timeouts(connect_s=1.0),
    )
    assert short.hedging == Hedging(ttfb_ms=None, max_attempts=2) and short.hedging.delay_s is None
    assert short.timeouts == Timeouts(request_s=3.0, connect_s=1.0)
    assert OrpheusTTS(A, hedge_ttfb_ms=250).hedging == Hedging(ttfb_ms=250)
    assert OrpheusTTS(A, hedging=Hedging(ttfb_ms=250)).hedging.delay_s == 0.25
    with pytest.raises(ValueError, match=r"Timeouts\.connect_s"):
        Timeouts(connect_s=0)
    with pytest.raises(ValueError, match=r"Hedging\.budget_ratio"):
        Hedging(budget_ratio=1.5)
    with pytest.raises(ValueError, match=r"Hedging\.budget_window_s"):
        Hedging(budget_window_s=0)
    with pytest.raises(ValueError, match=r"Pool\.max_line_bytes"):
        Pool(max_line_bytes=0)
    with pytest.raises(ValueError, match="max_attempts"):
        Hedging(max_attempts=0)
    with pytest.raises(ValueError, match="cooldown"):
        Breaker(base_cooldown_s=10, max_cooldown_s=1)
    with pytest.raises(ValueError, match="max_connections_per_endpoint"):
        Pool(max_connections_per_endpoint=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Timeouts().connect_s = 3  # type: ignore[misc]
