"""The client's behaviour on both event loops: asyncio and Trio (AnyIO's pytest plugin).

The exact timings stay in the Trio-only tests on MockClock (test_hedge.py,
test_client.py); here the same behaviours run on each loop on real time, with
short delays: the hedged race and its cancelled loser, failover only before
audio, deadlines, cancellation, the breaker, long-text order, no mixed audio,
no leaked connections.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import anyio
import httpx
import pytest
from _support_client import (
    FakeTransport,
    Script,
    expected_audio,
    in_order,
    per_endpoint,
    speech,
    status,
)

from orpheus_trio import (
    Breaker,
    CircuitOpenError,
    DeadlineExceeded,
    Hedging,
    IncompleteStreamError,
    OrpheusTTS,
)
from orpheus_trio.transports.asyncio import AsyncioTransport
from orpheus_trio.protocol.frames import encode_chunk
from orpheus_trio.audio.joins import JoinSmoother
from orpheus_trio.server.engines.synthetic import expected_stream
from orpheus_trio.transports.trio import TrioTransport

pytestmark = pytest.mark.anyio

A, B = "http://a:1", "http://b:1"
LONG_AGO = 30.0  # a delay no test waits out: the attempt must be cancelled first


async def test_hedge_wins_and_the_cancelled_loser_is_closed() -> None:
    fake = FakeTransport(in_order(speech(1, first_after=LONG_AGO), speech(2, first_after=0.0)))
    tts = OrpheusTTS([A, B], hedge_ttfb_ms=20, transport=fake)
    with anyio.fail_after(5):
        async with tts.open_stream("hi") as audio:
            pcm = b"".join([chunk async for chunk in audio])
    assert pcm == expected_audio(2)
    assert audio.attempts == 2
    assert len(fake.started) == 2
    assert fake.start_times[1] - fake.start_times[0] >= 0.015  # the hedge waited its delay
    # The loser was cancelled while it waited for audio, and its response closed.
    loser, winner = fake.responses()
    assert loser.bytes_sent == 0 and loser.closed_at is not None
    assert winner.closed_at is not None
    assert audio.endpoint == fake.started[1].endpoint != fake.started[0].endpoint
    wins = {e.url: e.wins for e in tts.endpoints()}
    assert wins == {audio.endpoint: 1, fake.started[0].endpoint: 0}
    assert [e.in_flight for e in tts.endpoints()] == [0, 0]


async def test_failover_before_audio() -> None:
    fake = FakeTransport(in_order(status(503, "unavailable"), speech(2, first_after=0.0)))
    tts = OrpheusTTS([A, B], hedge_ttfb_ms=None, transport=fake)
    assert await tts.synthesize("hi") == expected_audio(2)
    assert len(fake.started) == 2
    assert fake.started[0].endpoint != fake.started[1].endpoint


async def test_no_failover_and_no_mixed_audio_after_the_first_chunk() -> None:
    broken = Script(
        body=[(0.0, encode_chunk(0, b"\x01" * 8))],
        body_error=httpx.ReadError("connection reset"),
    )
    fake = FakeTransport(in_order(broken, speech(2, first_after=0.0)))
    tts = OrpheusTTS([A, B], transport=fake)
    received = []
    with pytest.raises(IncompleteStreamError):
        async with aclosing(tts.stream("hi")) as audio:
            async for chunk in audio:
                received.append(chunk)
    assert received == [b"\x01" * 8]  # the first attempt's audio only, never spliced
    assert len(fake.started) == 1
    assert all(r.closed_at is not None for r in fake.responses())


async def test_deadline_before_audio_is_a_timeout_error() -> None:
    fake = FakeTransport(in_order(Script(headers_after=LONG_AGO)))
    tts = OrpheusTTS(A, transport=fake, timeout_s=0.05)
    started = anyio.current_time()
    with anyio.fail_after(5), pytest.raises(DeadlineExceeded) as info:
        await tts.synthesize("hi")
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, asyncio.TimeoutError)  # what asyncio code catches
    assert anyio.current_time() - started < 2


async def test_deadline_mid_stream_keeps_the_audio_so_far() -> None:
    slow = Script(body=[(0.0, encode_chunk(0, b"\x02" * 8)), (LONG_AGO, b"")])
    fake = FakeTransport(in_order(slow))
    tts = OrpheusTTS(A, transport=fake)
    received = []
    with anyio.fail_after(5), pytest.raises(DeadlineExceeded):
        async with aclosing(tts.stream("hi", timeout_s=0.1)) as audio:
            async for chunk in audio:
                received.append(chunk)
    assert received == [b"\x02" * 8]
    assert fake.responses()[0].closed_at is not None


async def test_cancelling_the_caller_closes_the_stream() -> None:
    slow = Script(body=[(0.0, encode_chunk(0, b"\x03" * 8)), (LONG_AGO, b"")])
    fake = FakeTransport(in_order(slow))
    tts = OrpheusTTS(A, transport=fake)
    with anyio.move_on_after(0.1) as scope:
        async for _ in tts.stream("hi"):
            pass
    assert scope.cancelled_caught
    assert fake.responses()[0].closed_at is not None
    assert tts.endpoints()[0].in_flight == 0


async def test_breaker_opens_after_repeated_failures() -> None:
    fake = FakeTransport(in_order(status(500, "internal")))
    tts = OrpheusTTS(
        A, transport=fake, breaker=Breaker(failures=2), hedging=Hedging(max_attempts=1)
    )
    for _ in range(2):
        with pytest.raises(httpx.HTTPStatusError):
            await tts.synthesize("hi")
    with pytest.raises(CircuitOpenError):
        await tts.synthesize("hi")
    assert len(fake.started) == 2  # nothing was sent once the breaker opened


async def test_long_text_is_prefetched_and_kept_in_order() -> None:
    scripts = [speech(10 * n, first_after=0.01 * (3 - n)) for n in range(1, 4)]
    fake = FakeTransport(per_endpoint({A: scripts}))
    tts = OrpheusTTS(A, transport=fake)
    text = "First paragraph here.\n\nSecond paragraph here.\n\nThird paragraph here."
    with anyio.fail_after(5):
        pcm = await tts.synthesize(text, split="sentences")
    # In order, each join faded as the long-text pipeline does (issue 17).
    smoother, expected = JoinSmoother(), b""
    for n in range(1, 4):
        smoother.start_piece()
        expected += smoother.push(expected_audio(10 * n)) + smoother.end_piece(last=n == 3)
    assert pcm == expected
    assert len(fake.started) == 3
    first = fake.responses()[0]
    # The second piece was requested while the first still streamed (prefetch).
    assert first.closed_at is not None and fake.start_times[1] < first.closed_at


async def test_many_streams_at_once_on_the_real_transport(
    threaded_server: object, anyio_backend: str
) -> None:
    url = threaded_server()  # type: ignore[operator]
    params = {"chunks": 6, "chunk_samples": 480}
    texts = [f"Sentence number {i}." for i in range(8)]
    async with OrpheusTTS(url) as tts:
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            results[i] = await tts.synthesize(texts[i], **params)

        async with anyio.create_task_group() as group:
            for i in range(len(texts)):
                group.start_soon(one, i)
        for i, text in enumerate(texts):  # each caller got its own audio, whole
            assert results[i] == b"".join(expected_stream(text, None, params))
        # Leave a stream after its first chunk: its connection is closed, not pooled.
        async with tts.open_stream("Stop early.", chunks=50, chunk_samples=480) as audio:
            await audio.__anext__()
        transport = tts._transport.inner  # type: ignore[attr-defined]
        expected = TrioTransport if anyio_backend == "trio" else AsyncioTransport
        assert type(transport) is expected
        pool = transport._endpoints[url]
        assert pool.slots.value == transport._max_connections  # every slot given back
        assert 1 <= len(pool.idle) <= len(texts)
        assert tts.endpoints()[0].in_flight == 0
