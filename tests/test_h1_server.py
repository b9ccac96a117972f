"""The built-in HTTP/1.1 server: its sans-IO head parser, then its behaviour over real sockets."""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from typing import Any

import pytest
import trio
from _support_server import StartServer, json_of_raw_response, parse_frames, raw_exchange

from orpheus_trio.server import ServerConfig
from orpheus_trio.server.app import ACCESS_LOGGER
from orpheus_trio.server.http.run import serve_asgi
from orpheus_trio.server.http.request import (
    END_OF_MESSAGE,
    MAX_REQUEST_HEAD_BYTES,
    RequestHead,
    RequestParser,
    RequestRefused,
)

# -- the request parser (sans-IO) ------------------------------------------------------


def parse(wire: bytes) -> list[object]:
    parser = RequestParser()
    parser.feed(wire)
    events = []
    while (event := parser.next_event()) is not None:
        events.append(event)
    return events


def test_a_plain_post_is_parsed() -> None:
    head, body, end = parse(
        b"POST /v1/tts/stream?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type:  application/json \r\n"
        b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"
    )
    assert isinstance(head, RequestHead)
    assert (head.method, head.path, head.query, head.http_version) == (
        "POST",
        "/v1/tts/stream",
        b"x=1",
        "1.1",
    )
    assert head.headers[1] == (b"content-type", b"application/json")
    assert (head.content_length, head.chunked, head.keep_alive, head.expect_continue) == (
        2,
        False,
        True,
        True,
    )
    assert (body, end) == (b"hi", END_OF_MESSAGE)


def test_a_chunked_body_fed_byte_by_byte_comes_whole_and_trailers_are_dropped() -> None:
    wire = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: y\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    parser = RequestParser()
    for index in range(len(wire)):
        parser.feed(wire[index : index + 1])
    head = parser.next_event()
    assert isinstance(head, RequestHead) and head.chunked
    assert parser.next_body() == b"hello!"
    assert parser.take_end_of_message()
    following = parser.next_event()
    assert isinstance(following, RequestHead) and following.path == "/next"
    assert [(name, value) for name, value in following.headers] == [(b"host", b"a")]


def test_targets_in_absolute_form_and_percent_encoding() -> None:
    head = parse(b"GET http://gw:8000/v1/sys%74em HTTP/1.1\r\nHost: gw\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert head.path == "/v1/system"
    assert head.target == b"/v1/sys%74em"


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close", False),
        (b"GET / HTTP/1.1\r\nHost: a", True),
        (b"GET / HTTP/1.0", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive", False),
    ],
)
def test_when_the_connection_may_carry_another_request(head: bytes, keep_alive: bool) -> None:
    parsed = parse(head + b"\r\n\r\n")[0]
    assert isinstance(parsed, RequestHead) and parsed.keep_alive is keep_alive


def test_an_upgrade_is_served_as_a_plain_request_then_the_connection_ends() -> None:
    wire = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
    events = parse(wire + b"\x16\x03\x01 not http at all" + NEXT)
    assert len(events) == 2 and events[1] is END_OF_MESSAGE
    assert isinstance(events[0], RequestHead) and not events[0].keep_alive


def test_an_unfinished_head_past_the_limit_is_a_431_before_it_ends() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
    for _ in range(MAX_REQUEST_HEAD_BYTES // 1000 + 1):
        parser.feed(b"x" * 1000)
    refused = parser.next_event()
    assert isinstance(refused, RequestRefused) and refused.status == 431
    parser.feed(b"\r\n\r\n")  # nothing after a refusal is parsed
    assert parser.next_event() is None


def test_a_large_body_after_a_head_is_not_counted_as_head() -> None:
    body = b"x" * (4 * MAX_REQUEST_HEAD_BYTES)
    events = parse(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%sGET / HTTP/1.1\r\nHo"
        % (len(body), body)
    )
    assert [type(event) for event in events] == [RequestHead, bytes, type(END_OF_MESSAGE)]


# -- over sockets ------------------------------------------------------------------------

BODY = b'{"text": "hi", "chunks": 2}'


def _post(body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    return (
        b"POST /v1/tts/stream HTTP/%s\r\nHost: x\r\nContent-Type: application/json\r\n"
        % version
        + b"".join(extra)
        + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += body[:size]
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def _frame_types(raw: bytes) -> list[str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return [frame["type"] for frame in parse_frames(body)]


async def test_a_chunked_request_body_split_anywhere_is_read(start_server: StartServer) -> None:
    server = await start_server()
    half = len(BODY) // 2
    request = (
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: y\r\n\r\n"
        % (half, BODY[:half], len(BODY) - half, BODY[half:])
    )
    raw, closed = await raw_exchange(server.base_url, request, read_for_s=1)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert _frame_types(raw) == ["metrics", "chunk", "chunk", "metrics", "eos"]
    assert not closed  # kept alive: the body's end was found


async def test_a_broken_chunked_body_is_a_400_and_the_connection_closes(
    start_server: StartServer,
) -> None:
    server = await start_server()
    request = (
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY
    )
    raw, closed = await raw_exchange(server.base_url, request, read_for_s=3)
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert closed
    assert server.engine.requests_started == 0  # type: ignore[attr-defined]


async def test_an_http_1_0_caller_gets_an_unchunked_body_ended_by_the_close(
    start_server: StartServer,
) -> None:
    server = await start_server()
    raw, closed = await raw_exchange(
        server.base_url, _post(BODY, version=b"1.0"), read_for_s=3
    )
    head = raw.partition(b"\r\n\r\n")[0].lower()
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head and b"connection: close" in head
    assert _frame_types(raw)[-1] == "eos"
    assert closed


async def test_connection_close_is_honoured_after_the_answer(start_server: StartServer) -> None:
    server = await start_server()
    next_request = b"GET /v1/system HTTP/1.1\r\nHost: x\r\n\r\n"
    raw, closed = await raw_exchange(
        server.base_url, _post(BODY, b"Connection: close\r\n") + next_request, read_for_s=3
    )
    assert raw.count(b"HTTP/1.1 ") == 1  # the pipelined request after it is not served
    assert _frame_types(raw)[-1] == "eos"
    assert closed


async def test_responses_carry_a_date_and_the_right_framing(start_server: StartServer) -> None:
    server = await start_server()
    raw, _ = await raw_exchange(
        server.base_url, b"GET /v1/system HTTP/1.1\r\nHost: x\r\n\r\n", read_for_s=0.5
    )
    status, headers, body = json_of_raw_response(raw)
    assert status == 200 and body["server"] == "orpheus-trio"
    assert headers["date"].endswith(" GMT")
    assert int(headers["content-length"]) == len(raw.partition(b"\r\n\r\n")[2])


async def test_a_head_that_never_completes_is_dropped_after_read_timeout_s(
    start_server: StartServer,
) -> None:
    server = await start_server(read_timeout_s=0.3)
    started = trio.current_time()
    raw, closed = await raw_exchange(
        server.base_url, b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\n", read_for_s=3
    )
    assert closed and raw == b""
    assert trio.current_time() - started < 2


async def test_an_oversized_head_is_a_431(start_server: StartServer) -> None:
    server = await start_server()
    raw, closed = await raw_exchange(
        server.base_url,
        b"GET /v1/system HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * MAX_REQUEST_HEAD_BYTES),
        read_for_s=3,
    )
    assert raw.startswith(b"HTTP/1.1 431 ")
    assert closed


async def test_draining_closes_idle_keep_alive_connections_at_once(
    start_server: StartServer,
) -> None:
    server = await start_server(drain_grace_s=5)
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET /v1/system HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await stream.receive_some(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        server.drain.set()
        with trio.fail_after(2):  # not read_timeout_s (10 s): idle connections close now
            while await stream.receive_some(65536):
                pass
        with trio.fail_after(2):
            await server.stopped.wait()


async def test_a_caller_that_leaves_mid_stream_cancels_the_engine(
    start_server: StartServer,
) -> None:
    server = await start_server()
    body = json.dumps({"text": "long", "chunks": 1000, "rtf": 1.0}).encode()
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(_post(body))
    first = await stream.receive_some(65536)
    assert first.startswith(b"HTTP/1.1 200 ")
    await stream.aclose()
    with trio.fail_after(2):
        while server.app.admission.running:
            await trio.sleep(0.01)


# -- every framing class, on the real server: refused, closed, the next request unserved --

NEXT = b"GET /v1/system HTTP/1.1\r\nHost: x\r\n\r\n"


def _chunked(wire: bytes, *extra: bytes, coding: bytes = b"chunked") -> bytes:
    return (
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"".join(extra)
        + b"Transfer-Encoding: %s\r\n\r\n" % coding
        + wire
    )


def _with_fields(*extra: bytes, length: bool = True, body: bytes = BODY) -> bytes:
    return (
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"".join(extra)
        + (b"Content-Length: %d\r\n" % len(body) if length else b"")
        + b"\r\n"
        + body
    )


ONE_CHUNK = b"%x\r\n%s\r\n" % (len(BODY), BODY)
FRAMINGS = {
    # The four that the hand-written parser served (issue 29).
    "te-chunked-twice": (_chunked(ONE_CHUNK + b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n"), 400),
    "chunk-ext-bare-lf": (_chunked(b"5;\nX\r\nhello\r\n0\r\n\r\n"), 400),
    "trailer-bare-lf": (_chunked(ONE_CHUNK + b"0\r\nX-T: y\n\r\n"), 400),
    "trailer-nul": (_chunked(ONE_CHUNK + b"0\r\nX-T: a\x00b\r\n\r\n"), 400),
    # Refused before, refused still.
    "cl-and-te": (_with_fields(b"Transfer-Encoding: chunked\r\n"), 400),
    "cl-list": (_with_fields(b"Content-Length: %d, %d\r\n" % (len(BODY), len(BODY)), length=False), 400),
    "cl-twice": (_with_fields(b"Content-Length: %d\r\n" % len(BODY)), 400),
    "cl-twice-differing": (_with_fields(b"Content-Length: 3\r\n"), 400),
    "cl-plus": (_with_fields(b"Content-Length: +%d\r\n" % len(BODY), length=False), 400),
    "cl-minus": (_with_fields(b"Content-Length: -1\r\n", length=False, body=b""), 400),
    "cl-hex": (_with_fields(b"Content-Length: 0x%x\r\n" % len(BODY), length=False), 400),
    "cl-empty": (_with_fields(b"Content-Length: \r\n", length=False, body=b""), 400),
    "cl-overflow": (_with_fields(b"Content-Length: 99999999999999999999999\r\n", length=False), 400),
    "obs-fold": (_with_fields(b"X-Note: a\r\n folded\r\n"), 400),
    "obs-folded-cl": (_with_fields(b"Content-Length:\r\n %d\r\n" % len(BODY), length=False), 400),
    "bare-cr-in-value": (_with_fields(b"X: a\rb\r\n"), 400),
    "bare-cr-line-end": (b"GET /v1/system HTTP/1.1\rHost: x\r\n\r\n", 400),
    "bare-lf-line-ends": (b"GET /v1/system HTTP/1.1\nHost: x\n\n", 400),
    "nul-in-value": (_with_fields(b"X: a\x00b\r\n"), 400),
    "nul-in-name": (_with_fields(b"X\x00Y: a\r\n"), 400),
    "control-in-value": (_with_fields(b"X: a\x01b\r\n"), 400),
    "del-in-value": (_with_fields(b"X: a\x7fb\r\n"), 400),
    "space-before-colon": (_with_fields(b"X-A : a\r\n"), 400),
    "line-without-colon": (_with_fields(b"no colon here\r\n"), 400),
    "chunk-size-overflow": (_chunked(b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk-size-not-hex": (_chunked(b"zz\r\n" + BODY), 400),
    "chunk-size-0x": (_chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-size-signed": (_chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-size-trailing-space": (_chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-data-overrun": (_chunked(b"5\r\nhelloX0\r\n\r\n"), 400),
    "te-gzip-chunked": (_chunked(ONE_CHUNK + b"0\r\n\r\n", coding=b"gzip, chunked"), 501),
    "te-chunked-chunked": (_chunked(ONE_CHUNK + b"0\r\n\r\n", coding=b"chunked, chunked"), 400),
    "te-gzip": (_with_fields(b"Transfer-Encoding: gzip\r\n", length=False), 501),
    "te-identity": (_with_fields(b"Transfer-Encoding: identity\r\n", length=False), 501),
    "te-on-http-1.0": (
        b"POST /v1/tts/stream HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + ONE_CHUNK + b"0\r\n\r\n",
        400,
    ),
    "host-missing": (b"GET /v1/system HTTP/1.1\r\n\r\n", 400),
    "host-twice": (b"GET /v1/system HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "version-2": (b"GET /v1/system HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "version-malformed": (b"GET /v1/system HTTQ/1.1\r\nHost: x\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bad-method": (b"G(T /v1/system HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "target-not-a-path": (b"GET ftp://a/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "unmet-expectation": (_with_fields(b"Expect: 200-ok\r\n"), 417),
    "head-too-large": (
        b"GET /v1/system HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * MAX_REQUEST_HEAD_BYTES) + b"\r\n\r\n",
        431,
    ),
    "chunk-extension-200-kb": (_chunked(b"5;" + b"e" * 200_000 + b"\r\nhello\r\n0\r\n\r\n"), 400),
}  # fmt: skip


@pytest.mark.parametrize(("wire", "status"), FRAMINGS.values(), ids=FRAMINGS.keys())
async def test_every_framing_class_is_refused_and_the_pipelined_request_not_served(
    start_server: StartServer, wire: bytes, status: int
) -> None:
    server = await start_server()
    raw, closed = await raw_exchange(server.base_url, wire + NEXT, read_for_s=3)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:200]
    # The pipelined GET was not served: one status line only.
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", raw)) == 1, raw
    assert closed
    assert server.engine.requests_started == 0  # type: ignore[attr-defined]


# -- answers: HEAD, Content-Length kept, a broken body logged as what it was --------------


async def _serve_test_app(nursery: trio.Nursery, app: Any) -> str:
    config = ServerConfig(host="127.0.0.1", port=0)
    base_url: str = await nursery.start(partial(serve_asgi, app, config))
    return base_url


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], *bodies: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for index, body in enumerate(bodies):
        await send(
            {"type": "http.response.body", "body": body, "more_body": index < len(bodies) - 1}
        )


async def test_head_answers_carry_no_body_and_no_last_chunk(nursery: trio.Nursery) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _answer(send, 200, [(b"content-type", b"text/plain")], b"hello ", b"world")

    base_url = await _serve_test_app(nursery, app)
    head = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
    raw, closed = await raw_exchange(base_url, head + NEXT.replace(b"/v1/system", b"/"), read_for_s=1)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in first.lower()  # what a GET's answer would say
    # Nothing after the head, not even "0\r\n\r\n": the next bytes are the GET's answer.
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert _dechunk(rest.partition(b"\r\n\r\n")[2]) == b"hello world"
    assert not closed


@pytest.mark.parametrize(
    ("bodies", "answer"),
    [
        ((b"12345678901",), b"HTTP/1.1 500 "),  # longer than declared, before the head left
        ((b"12345",), b"HTTP/1.1 500 "),  # shorter
        ((b"12345", b"678901"), b"HTTP/1.1 200 "),  # too long once the head is out
        ((b"12345", b""), b"HTTP/1.1 200 "),  # ends short once the head is out
    ],
)
async def test_a_body_that_disagrees_with_its_content_length_is_our_error_not_a_reply(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    bodies: tuple[bytes, ...],
    answer: bytes,
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _answer(send, 200, [(b"content-length", b"10")], *bodies)

    base_url = await _serve_test_app(nursery, app)
    raw, closed = await raw_exchange(base_url, NEXT + NEXT, read_for_s=2)
    assert raw.startswith(answer)
    assert raw.count(b"HTTP/1.1 ") == 1 and closed  # the connection ended with it
    head, _, body = raw.partition(b"\r\n\r\n")
    if answer == b"HTTP/1.1 200 ":
        assert len(body) < 10  # never a complete-looking, wrong body
    assert any("disagrees with its content-length 10" in r.getMessage() for r in caplog.records)


async def test_a_bad_chunk_size_line_is_a_400_logged_as_one(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    server = await start_server()
    wire = (
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"tex\r\nzz\r\n"
    )
    raw, closed = await raw_exchange(server.base_url, wire + NEXT, read_for_s=3)
    assert raw.startswith(b"HTTP/1.1 400 ") and closed
    assert b"invalid_request" in raw
    (record,) = [r.request for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert (record["status"], record["code"]) == (400, "invalid_request")


# -- stopping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "held",
    [b"", b"GET /v1/system HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /v1/system HTTP/1.1\r\nHo"],
    ids=["connected-silent", "kept-alive-after-a-request", "mid-head"],
)
async def test_an_idle_server_stops_at_once_whatever_its_connections_wait_for(
    start_server: StartServer, held: bytes
) -> None:
    # Issue 31: idle servers took 1.6-2.0 s to stop. No stream in flight, so
    # nothing earns a grace: the server stops well within the last grace (1 s).
    server = await start_server(drain_grace_s=5)
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        if held:
            await stream.send_all(held)
        if held.endswith(b"\r\n\r\n"):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
        await trio.sleep(0.1)
        started = trio.current_time()
        server.drain.set()
        with trio.fail_after(2):
            await server.stopped.wait()
        assert trio.current_time() - started < 0.3
