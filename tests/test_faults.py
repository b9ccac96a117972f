"""The fault matrix, on real sockets: every fault ends in its exception type, within a bound,
fails over exactly when no audio was delivered yet, never mixes two attempts' audio, and
leaks no connection, file descriptor or task.

Most faults come from a raw socket server (tests/_support_faults.py) whose n-th request
gets the n-th scripted reply; its good answers carry audio that names the request, so
"the audio came from request 1 only" is checked byte for byte. The rest run against the
reference server's synthetic engine. Tests use the public client only, so they keep
guarding any transport.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
from _support_faults import (
    CHUNKS,
    RawServer,
    Reply,
    body,
    closed_port_url,
    drip,
    error_line,
    expected_audio,
    good,
    good_lines,
    open_fds,
    pcm_of,
    reset_after,
    reset_before_headers,
    silence_after,
    status,
    task_count,
)
from _support_server import StartServer

from orpheus_trio import (
    DeadlineExceeded,
    HTTPStatusError,
    Hedging,
    IncompleteStreamError,
    OrpheusTTS,
    ProtocolError,
    ServiceError,
    SlowBodyError,
    Timeouts,
)
from orpheus_trio.protocol.frames import encode_chunk, encode_eos, encode_metrics
from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream

#: Every case must end well within this (seconds).
BOUND_S = 10.0
#: Both transports must keep every guarantee.
TRANSPORTS = ["trio", "httpx"]
#: Reference servers' read (and keep-alive) timeout in these tests.
REF_IDLE_S = 0.5
TEXT = "fault matrix"
TEN_MB_LINE = b'{"type":"chunk","seq":0,"audio":"' + b"A" * (10 * 1024 * 1024) + b'"}\n'
MALFORMED = b'{"type": "chunk", "seq": not-json\n'
INVALID_B64 = b'{"type":"chunk","seq":%d,"audio":"AAA*"}\n'
ODD_PCM = b'{"type":"chunk","seq":%d,"audio":"AAAA"}\n'  # 3 bytes: not a whole number of samples


def chunk0(request: int = 0) -> bytes:
    return encode_chunk(0, pcm_of(request, 0))


@dataclass
class Outcome:
    audio: bytes
    error: BaseException | None
    requests: int
    attempts: int | None
    elapsed_s: float


async def settle(fds_before: int, tasks_before: int) -> tuple[int, int]:
    """Wait (briefly) for closes to land; return (fds, tasks) above the baseline."""
    with trio.move_on_after(2.0):
        while open_fds() > fds_before or task_count() > tasks_before:
            await trio.sleep(0.01)
    return open_fds() - fds_before, task_count() - tasks_before


async def settle_fds(fds_before: int) -> int:
    """Wait for closes to land; return the fds above the baseline.

    A server's socket closes once it reads the client's close; reference servers here
    run with ``read_timeout_s=REF_IDLE_S``, the longest any may be held.
    """
    with trio.move_on_after(REF_IDLE_S + 2.0):
        while open_fds() > fds_before:
            await trio.sleep(0.01)
    return open_fds() - fds_before


async def run_case(
    nursery: trio.Nursery,
    replies: Sequence[Reply] | Callable[[int], Reply],
    **options: Any,
) -> Outcome:
    """One request through a fresh client against a raw server; checks for leaks after it."""
    script = (
        replies if callable(replies) else (lambda n: replies[min(n, len(replies) - 1)])
    )
    server = RawServer(script)
    await server.start(nursery)
    gc.collect()  # an earlier case's unreachable socket, closed later, would skew the count
    fds_before, tasks_before = open_fds(), task_count()
    options.setdefault("hedge_ttfb_ms", None)
    audio = bytearray()
    error: BaseException | None = None
    attempts = None
    started = trio.current_time()
    with trio.fail_after(BOUND_S):
        async with OrpheusTTS(server.url, rng=random.Random(0), **options) as tts:
            try:
                async with tts.open_stream(TEXT) as stream:
                    attempts = stream.attempts
                    async for pcm in stream:
                        assert len(pcm) % 2 == 0
                        audio += pcm
            except Exception as caught:  # noqa: BLE001 - the test inspects it
                error = caught
            elapsed = trio.current_time() - started
            # While the client lives: no connection left open, no fd, no task.
            assert await server.wait_connections_closed() == 0
            assert await settle(fds_before, tasks_before) == (0, 0)
    return Outcome(bytes(audio), error, server.requests, attempts, elapsed)


# -- before the first audio: fail over, and only the second attempt's audio arrives --


def raw_reply(data: bytes) -> Reply:
    """Exactly these bytes as the answer, then wait for the client to close."""

    async def reply(conn: Any) -> None:
        await conn.stream.send_all(data)
        await conn.until_client_closes()

    return reply


HUGE_HEAD = (
    b"HTTP/1.1 200 OK\r\n" + b"X-Junk: " + b"a" * (10 * 1024 * 1024) + b"\r\n\r\n"
)
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)

PRE_AUDIO_FAULTS: dict[str, tuple[Reply, type[BaseException]]] = {
    "not HTTP": (raw_reply(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), httpx.TransportError),
    "10 MB of headers": (raw_reply(HUGE_HEAD), httpx.TransportError),
    "broken chunked framing": (
        raw_reply(CHUNKED_HEAD + b"zz\r\nhello\r\n"),
        httpx.TransportError,
    ),
    "reset before headers": (reset_before_headers(), httpx.TransportError),
    "reset after headers": (reset_after([]), httpx.TransportError),
    "429": (status(429, "overloaded", retry_after="1"), HTTPStatusError),
    "503": (status(503, "unavailable"), HTTPStatusError),
    "500": (status(500, "internal"), HTTPStatusError),
    "body ends without eos or audio": (body([]), IncompleteStreamError),
    "error frame before audio": (body([error_line("engine_error")]), ServiceError),
    "malformed line": (body([MALFORMED]), ProtocolError),
    # The server then holds the connection open: the error must not wait for more bytes.
    "metrics then malformed line in one read": (
        body([encode_metrics(queue_depth=0) + MALFORMED], end=False),
        ProtocolError,
    ),
    "invalid base64": (body([INVALID_B64 % 0]), ProtocolError),
    "odd PCM length": (body([ODD_PCM % 0]), ProtocolError),
    "10 MB line": (body([TEN_MB_LINE]), ProtocolError),
    "seq gap": (body([encode_chunk(1, pcm_of(0, 1))]), ProtocolError),
    "headers then silence": (silence_after([]), httpx.ReadTimeout),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", PRE_AUDIO_FAULTS)
async def test_fault_before_audio_fails_over_without_mixing(
    nursery: trio.Nursery, fault: str, transport: str
) -> None:
    reply = PRE_AUDIO_FAULTS[fault][0]
    outcome = await run_case(
        nursery, [reply, good()], timeouts=Timeouts(read_s=0.3), transport=transport
    )
    assert outcome.error is None
    assert outcome.requests == 2 and outcome.attempts == 2
    assert outcome.audio == expected_audio(1)  # request 1's bytes only, every one


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", PRE_AUDIO_FAULTS)
async def test_fault_before_audio_with_no_attempt_left_raises_its_type(
    nursery: trio.Nursery, fault: str, transport: str
) -> None:
    reply, error_type = PRE_AUDIO_FAULTS[fault]
    outcome = await run_case(
        nursery,
        [reply],
        hedging=Hedging(max_attempts=1),
        timeouts=Timeouts(read_s=0.3),
        transport=transport,
    )
    assert isinstance(outcome.error, error_type), repr(outcome.error)
    assert outcome.requests == 1 and outcome.audio == b""


async def test_status_error_says_what_the_server_said(nursery: trio.Nursery) -> None:
    outcome = await run_case(
        nursery,
        [status(429, "overloaded", retry_after="3")],
        hedging=Hedging(max_attempts=1),
    )
    error = outcome.error
    assert isinstance(error, HTTPStatusError)
    assert (error.status_code, error.code, error.retry_after_s) == (
        429,
        "overloaded",
        3.0,
    )
    assert error.retryable


async def test_every_attempt_failing_raises_one_error_after_max_attempts(
    nursery: trio.Nursery,
) -> None:
    outcome = await run_case(
        nursery, [status(503, "unavailable")], hedging=Hedging(max_attempts=3)
    )
    assert isinstance(outcome.error, HTTPStatusError)
    assert outcome.error.status_code == 503
    assert outcome.requests == 3


@pytest.mark.parametrize(
    "reply",
    [
        status(400, "invalid_param"),
        status(401, "unauthorized"),
        body([error_line("invalid_param")]),
    ],
    ids=["400", "401", "in-band invalid_param"],
)
async def test_non_retryable_answer_is_not_retried(
    nursery: trio.Nursery, reply: Reply
) -> None:
    outcome = await run_case(nursery, [reply, good()])
    assert isinstance(outcome.error, (HTTPStatusError, ServiceError))
    assert outcome.requests == 1


# -- after the first audio: no failover; the error surfaces, audio so far is a prefix --

MID_STREAM_FAULTS: dict[str, tuple[Reply, type[BaseException], int]] = {
    # (reply, error type, chunks delivered before the error)
    "reset mid-body": (reset_after([chunk0()]), IncompleteStreamError, 1),
    "body without eos": (
        body(good_lines(0)[:CHUNKS], gap_s=0.05),
        IncompleteStreamError,
        CHUNKS,
    ),
    "error frame mid-stream": (
        body([chunk0(), error_line("engine_error")], gap_s=0.05),
        ServiceError,
        1,
    ),
    "malformed line": (body([chunk0(), MALFORMED], gap_s=0.05), ProtocolError, 1),
    "invalid base64": (body([chunk0(), INVALID_B64 % 1], gap_s=0.05), ProtocolError, 1),
    # A valid chunk and a broken line in the same read: the chunk is the first audio
    # (the race is won, nothing is retried), then the error. The server then holds
    # the connection open, so the error must not wait for more bytes.
    "chunk then malformed line in one read": (
        body([chunk0() + MALFORMED], end=False),
        ProtocolError,
        1,
    ),
    "chunk then invalid base64 in one read": (
        body([chunk0() + INVALID_B64 % 1], end=False),
        ProtocolError,
        1,
    ),
    "odd PCM length": (body([chunk0(), ODD_PCM % 1], gap_s=0.05), ProtocolError, 1),
    "10 MB line": (body([chunk0(), TEN_MB_LINE], gap_s=0.05), ProtocolError, 1),
    "seq gap": (
        body([chunk0(), encode_chunk(2, pcm_of(0, 2))], gap_s=0.05),
        ProtocolError,
        1,
    ),
    "wrong eos totals": (
        body([*good_lines(0)[:CHUNKS], encode_eos(CHUNKS + 1, 1)], gap_s=0.05),
        ProtocolError,
        CHUNKS,
    ),
    "silence mid-body": (silence_after([chunk0()]), httpx.ReadTimeout, 1),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", MID_STREAM_FAULTS)
async def test_fault_after_audio_raises_and_never_fails_over(
    nursery: trio.Nursery, fault: str, transport: str
) -> None:
    reply, error_type, delivered = MID_STREAM_FAULTS[fault]
    outcome = await run_case(
        nursery, [reply, good()], timeouts=Timeouts(read_s=0.3), transport=transport
    )
    assert isinstance(outcome.error, error_type), repr(outcome.error)
    assert outcome.requests == 1  # no second attempt once audio was out
    assert outcome.audio == expected_audio(0, chunks=delivered)


async def test_protocol_errors_name_the_line(nursery: trio.Nursery) -> None:
    outcome = await run_case(nursery, MID_STREAM_FAULTS["seq gap"][:1])
    assert isinstance(outcome.error, ProtocolError)
    assert outcome.error.line == 2 and "expected 1, got 2" in outcome.error.reason


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chunk_sharing_a_read_with_a_bad_line_arrives_then_the_error(
    nursery: trio.Nursery, transport: str
) -> None:
    reply = MID_STREAM_FAULTS["chunk then malformed line in one read"][0]
    outcome = await run_case(
        nursery, [reply, good()], timeouts=Timeouts(read_s=5.0), transport=transport
    )
    assert outcome.audio == pcm_of(0, 0)  # exactly chunk 0 of request 0
    assert outcome.error == ProtocolError(
        "invalid JSON: Expecting value (column 26)", 2
    )
    assert outcome.requests == 1
    assert outcome.elapsed_s < 2.0  # raised from what arrived, not after a read timeout


async def test_incomplete_stream_counts_what_arrived(nursery: trio.Nursery) -> None:
    outcome = await run_case(nursery, MID_STREAM_FAULTS["reset mid-body"][:1])
    assert isinstance(outcome.error, IncompleteStreamError)
    assert outcome.error.chunks_received == 1


async def test_silence_mid_body_ends_at_the_client_deadline(
    nursery: trio.Nursery,
) -> None:
    outcome = await run_case(nursery, [silence_after([chunk0()])], timeout_s=0.5)
    assert isinstance(outcome.error, DeadlineExceeded)
    assert outcome.audio == pcm_of(0, 0)
    assert 0.4 < outcome.elapsed_s < 2.0


async def test_silence_before_audio_ends_at_the_client_deadline(
    nursery: trio.Nursery,
) -> None:
    outcome = await run_case(nursery, [silence_after([])], timeout_s=0.5)
    assert isinstance(outcome.error, DeadlineExceeded)
    assert 0.4 < outcome.elapsed_s < 2.0


# -- servers that trickle: never silent, never done -----------------------------------

#: Routing hints every 50 ms: enough to defeat a read timeout, never audio.
METRICS_DRIP = drip([], every_s=0.05, filler=b'{"type":"metrics","queue_depth":0}\n')


@pytest.mark.parametrize(
    "reply",
    [
        METRICS_DRIP,
        drip([], every_s=0.05, filler=b"\n"),  # blank lines
        drip([], every_s=0.05, filler=b"A"),  # one endless line, byte by byte
        drip([chunk0()], every_s=0.05, filler=b" "),  # after audio
    ],
    ids=["metrics", "blank lines", "endless line", "after audio"],
)
async def test_a_trickling_server_is_ended_by_the_deadline(
    nursery: trio.Nursery, reply: Reply
) -> None:
    outcome = await run_case(nursery, [reply], timeout_s=0.5, timeouts=Timeouts(read_s=0.3))
    assert isinstance(outcome.error, DeadlineExceeded)
    assert 0.4 < outcome.elapsed_s < 2.0


#: Every trickle above, against 1000 bytes per 0.5 s of waiting (at most 720 B/s arrive).
MIN_RATE = {"min_rate_bytes": 1000, "min_rate_window_s": 0.5}
#: ... with the read timeout these tests use.
TRICKLE_TIMEOUTS = Timeouts(read_s=0.3, **MIN_RATE)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "reply",
    [
        METRICS_DRIP,
        drip([], every_s=0.05, filler=b"\n"),
        drip([], every_s=0.05, filler=b"A"),
        drip([chunk0()], every_s=0.05, filler=b" "),
    ],
    ids=["metrics", "blank lines", "endless line", "after audio"],
)
async def test_without_a_deadline_a_trickling_server_is_ended_by_the_minimum_rate(
    nursery: trio.Nursery, reply: Reply, transport: str
) -> None:
    outcome = await run_case(
        nursery,
        [reply],
        timeouts=TRICKLE_TIMEOUTS,
        hedging=Hedging(max_attempts=1),
        transport=transport,
    )
    assert isinstance(outcome.error, SlowBodyError), outcome.error
    assert isinstance(outcome.error, httpx.ReadTimeout)
    assert 0.45 < outcome.elapsed_s < 2.0
    after_audio = outcome.audio != b""
    assert outcome.audio in (b"", pcm_of(0, 0))
    assert outcome.error.chunks_received == (1 if after_audio else 0)


async def test_one_byte_a_second_is_cut_off(nursery: trio.Nursery) -> None:
    # The read timeout (1.5 s) restarts with every byte; 3 bytes per 1.2 s of waiting does not.
    one_a_second = drip([], every_s=1.0, filler=b"\n")
    outcome = await run_case(
        nursery,
        [one_a_second],
        timeouts=Timeouts(read_s=1.5, min_rate_bytes=3, min_rate_window_s=1.2),
        hedging=Hedging(max_attempts=1),
    )
    assert isinstance(outcome.error, SlowBodyError)
    # The first byte at 1 s fills the bucket (3 bytes, draining 2.5/s); at 2 s 3 - 2.5 + 1
    # are left, dry 0.6 s later, so the third byte (at 3 s) came too late.
    assert 2.9 < outcome.elapsed_s < 3.6


async def test_a_trickling_server_fails_over_by_the_minimum_rate(
    nursery: trio.Nursery,
) -> None:
    outcome = await run_case(nursery, [METRICS_DRIP, good()], timeouts=TRICKLE_TIMEOUTS)
    assert outcome.error is None and outcome.audio == expected_audio(1)
    assert outcome.requests == 2


async def test_a_trickling_server_is_hedged(nursery: trio.Nursery) -> None:
    outcome = await run_case(
        nursery, [METRICS_DRIP, good()], hedge_ttfb_ms=100, timeouts=Timeouts(read_s=0.3)
    )
    assert outcome.error is None and outcome.audio == expected_audio(1)
    assert outcome.elapsed_s < 1.5


# -- hedging and refused connections -------------------------------------------------


async def test_slow_first_byte_is_hedged_and_the_loser_closed(
    nursery: trio.Nursery,
) -> None:
    outcome = await run_case(
        nursery, [good(first_delay_s=5.0), good()], hedge_ttfb_ms=100
    )
    assert outcome.error is None
    assert outcome.requests == 2 and outcome.attempts == 2
    assert outcome.audio == expected_audio(1)
    assert outcome.elapsed_s < 1.5  # the slow attempt was not waited for


async def test_connection_refused_alone_raises_connect_error_quickly() -> None:
    fds_before, tasks_before = open_fds(), task_count()
    with trio.fail_after(BOUND_S):
        async with OrpheusTTS(closed_port_url(), hedge_ttfb_ms=None) as tts:
            with pytest.raises(httpx.ConnectError):
                await tts.synthesize(TEXT)
    assert await settle(fds_before, tasks_before) == (0, 0)


async def test_connection_refused_fails_over_to_a_live_worker(
    start_server: StartServer,
) -> None:
    engine = SyntheticEngine()
    live = (await start_server(engine, read_timeout_s=REF_IDLE_S)).base_url
    refused = closed_port_url()
    params = {"chunk_samples": 480, "seed": 3}
    fds_before = open_fds()
    with trio.fail_after(BOUND_S):
        async with OrpheusTTS([refused, live], hedge_ttfb_ms=None) as tts:
            for i in range(20):
                text = f"{TEXT} {i}"
                audio = await tts.synthesize(text, **params)
                assert audio == b"".join(expected_stream(text, None, params))
            by_url = {s.url: s for s in tts.endpoints()}
    assert by_url[live].wins == 20 and by_url[refused].wins == 0
    assert engine.requests_started == 20  # one attempt each on the live worker
    # A refused attempt counts as a slow sample: the dead endpoint is not tried first again
    # (it used to stay "cold", be tried first by every request and exhaust the budget).
    assert by_url[refused].attempts <= 1
    assert await settle_fds(fds_before) == 0


# -- against the reference server's synthetic engine -----------------------------------


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        ({"cut_after": 2}, IncompleteStreamError),
        ({"error_after": 2}, ServiceError),
        ({"malformed_after": 2}, ProtocolError),
    ],
    ids=["cut", "error frame", "malformed"],
)
async def test_reference_server_mid_stream_faults(
    start_server: StartServer, fault: dict[str, int], error_type: type[BaseException]
) -> None:
    engine = SyntheticEngine(defaults={"chunk_samples": 480})
    server = await start_server(engine, read_timeout_s=REF_IDLE_S)
    fds_before = open_fds()
    got: list[bytes] = []
    with trio.fail_after(BOUND_S):
        async with OrpheusTTS(server.base_url, hedge_ttfb_ms=None) as tts:
            with pytest.raises(error_type):
                async for pcm in tts.stream(TEXT, chunks=6, **fault):
                    got.append(pcm)
            # The server saw one request and has nothing running any more.
            with trio.fail_after(2):
                while server.app.admission.running:
                    await trio.sleep(0.01)
    assert engine.requests_started == 1
    assert got == expected_stream(TEXT, None, {"chunk_samples": 480, "chunks": 6})[:2]
    assert await settle_fds(fds_before) == 0


async def test_reference_server_busy_worker_fails_over(
    start_server: StartServer,
) -> None:
    busy = SyntheticEngine(defaults={"fail_status": 503})
    fine = SyntheticEngine()
    urls = [(await start_server(busy)).base_url, (await start_server(fine)).base_url]
    with trio.fail_after(BOUND_S):
        # A budget that never runs out here: this test is about failover, not the budget.
        async with OrpheusTTS(
            urls, hedge_ttfb_ms=None, rng=random.Random(7), hedging=Hedging(budget_min=100)
        ) as tts:
            for i in range(8):
                text = f"{TEXT} {i}"
                async with tts.open_stream(text) as audio:
                    got = b"".join([pcm async for pcm in audio])
                assert got == b"".join(expected_stream(text, None, {}))
    assert fine.requests_started == 8
    assert busy.requests_started >= 1  # it was tried, and failed over every time


async def test_reference_server_slow_first_chunk_is_hedged(
    start_server: StartServer,
) -> None:
    from orpheus_trio.server.engines.synthetic import ScheduledFault

    # Every 2nd request (the 2nd, 4th...) is slow; the hedge, the next request, is not.
    engine = SyntheticEngine(faults=[ScheduledFault({"ttfb_ms": 3000}, every=2)])
    server = await start_server(engine, read_timeout_s=REF_IDLE_S)
    with trio.fail_after(BOUND_S):
        async with OrpheusTTS(server.base_url, hedge_ttfb_ms=100) as tts:
            for i in range(4):
                text = f"{TEXT} {i}"
                started = trio.current_time()
                assert await tts.synthesize(text) == b"".join(
                    expected_stream(text, None, {})
                )
                assert trio.current_time() - started < 1.5
        with trio.fail_after(2):
            while server.app.admission.running:
                await trio.sleep(0.01)
    assert engine.requests_cancelled >= 1  # the slow losers were cancelled server-side


async def test_finished_streams_give_their_connection_back(
    start_server: StartServer,
) -> None:
    """After eos the client reads the HTTP body's end, so one connection serves them all."""
    import psutil

    server = await start_server(SyntheticEngine(), read_timeout_s=REF_IDLE_S)
    port = int(server.base_url.rsplit(":", 1)[1])
    client_ports: set[int] = set()
    async with OrpheusTTS(server.base_url, hedge_ttfb_ms=None) as tts:
        for i in range(10):
            text = f"{TEXT} {i}"
            assert await tts.synthesize(text) == b"".join(
                expected_stream(text, None, {})
            )
            client_ports |= {
                c.laddr.port
                for c in psutil.Process().net_connections("tcp")
                if c.raddr and c.raddr.port == port
            }
    assert len(client_ports) == 1
