"""The built-in HTTP/1.1 server: its sans-IO head parser, then its behaviour over real sockets."""

from __future__ import annotations

import json

import pytest
import trio
from _support_server import StartServer, json_of_raw_response, parse_frames, raw_exchange

from orpheus_trio.server import ServerConfig
from orpheus_trio.server.http.request import (
    MAX_REQUEST_HEAD_BYTES,
    RequestRefused,
    parse_request_head,
)

# -- the head parser ------------------------------------------------------------------


def test_a_plain_post_head_is_parsed() -> None:
    head = parse_request_head(
        b"POST /v1/tts/stream?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type:  application/json \r\n"
        b"Content-Length: 12\r\nExpect: 100-continue"
    )
    assert (head.method, head.path, head.query, head.http_version) == (
        "POST",
        "/v1/tts/stream",
        b"x=1",
        "1.1",
    )
    assert head.headers[1] == (b"content-type", b"application/json")
    assert (head.content_length, head.chunked, head.keep_alive, head.expect_continue) == (
        12,
        False,
        True,
        True,
    )


def test_targets_in_absolute_form_and_percent_encoding() -> None:
    head = parse_request_head(b"GET http://gw:8000/v1/sys%74em HTTP/1.1\r\nHost: gw")
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
    assert parse_request_head(head).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/2.0\r\nHost: a", 505),
        (b"GET / HTTQ/1.1\r\nHost: a", 400),
        (b"GET  / HTTP/1.1\r\nHost: a", 400),
        (b"GET /a b HTTP/1.1\r\nHost: a", 400),
        (b"G(T / HTTP/1.1\r\nHost: a", 400),
        (b"GET / HTTP/1.1", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400),
        (b"GET / HTTP/1.1\r\nHost : a", 400),  # whitespace before the colon
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb", 400),  # a bare CR
        (b"GET / HTTP/1.1\r\nHost: a\r\nno colon here", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok", 417),
        (b"GET ftp://a/ HTTP/1.1\r\nHost: a", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * MAX_REQUEST_HEAD_BYTES, 431),
    ],
)
def test_refused_heads_say_why_with_the_right_status(head: bytes, status: int) -> None:
    with pytest.raises(RequestRefused) as refused:
        parse_request_head(head)
    assert refused.value.status == status
    assert refused.value.reason


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


def test_the_http_server_must_be_one_we_have() -> None:
    with pytest.raises(ValueError, match="http_server must be one of builtin, hypercorn"):
        ServerConfig(http_server="nginx")
