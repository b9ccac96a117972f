"""TrioTransport on real sockets: pooling, framing, faults, timeouts, cancellation, TLS."""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import httpx
import pytest
import trio
import trio.testing
import trustme
from _support_faults import Conn, RawServer, good, good_lines, silence_after
from _support_server import StartServer

from orpheus_trio import Hedging, OrpheusTTS
from orpheus_trio.errors import IncompleteStreamError
from orpheus_trio.protocol.frames import FrameDecoder
from orpheus_trio.server.engines.synthetic import expected_stream
from orpheus_trio.transports.base import ResponseStream, StreamRequest
from orpheus_trio.transports.trio import InsecureTransportWarning, TrioTransport

PARAMS = {"chunk_samples": 480, "chunks": 4}
Reply = Callable[[Conn], Awaitable[None]]


def request(base_url: str, **extra: object) -> StreamRequest:
    body = json.dumps({"text": "Hi there.", **PARAMS, **extra}).encode()
    return StreamRequest(
        endpoint=base_url,
        path="/v1/tts/stream",
        headers={"Content-Type": "application/json"},
        body=body,
    )


async def read_body(response: ResponseStream) -> bytes:
    body = bytearray()
    while data := await response.receive():
        body += data
    return bytes(body)


async def raw_server(nursery: trio.Nursery, *replies: Reply) -> RawServer:
    server = RawServer(lambda n: replies[min(n, len(replies) - 1)])
    await server.start(nursery)
    return server


def send(data: bytes, *, then_close: bool = False) -> Reply:
    async def reply(conn: Conn) -> None:
        await conn.stream.send_all(data)
        if not then_close:
            await conn.until_client_closes()

    return reply


async def watchdogs() -> int:
    """Read-watchdog tasks alive in this run (once every task had its turn)."""
    await trio.testing.wait_all_tasks_blocked()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, stack = 0, [root]
    while stack:
        task = stack.pop()
        count += task.name == "orpheus-trio read watchdog"
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


# -- keep-alive pool ----------------------------------------------------------------------


async def test_full_reads_reuse_one_connection(start_server: StartServer) -> None:
    server = await start_server()
    transport = TrioTransport()
    sockets = set()
    for _ in range(3):
        response = await transport.open_stream(request(server.base_url))
        decoder, pcm = FrameDecoder(), []
        while data := await response.receive():
            pcm += [f.pcm for f in decoder.feed(data) if hasattr(f, "pcm")]
        decoder.close()
        assert pcm == expected_stream("Hi there.", None, PARAMS)
        await response.aclose()
        idle = transport._endpoints[server.base_url].idle
        assert len(idle) == 1
        sockets.add(idle[0].socket)
    assert len(sockets) == 1
    assert await watchdogs() == 0  # no response open: no background task
    await transport.aclose()
    assert (
        next(iter(sockets)).fileno() == -1
    )  # closing the transport closes idle connections
    with pytest.raises(RuntimeError, match="closed"):
        await transport.open_stream(request(server.base_url))


async def test_client_reuses_connections_and_drops_abandoned_ones(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with OrpheusTTS(server.base_url) as tts:
        sockets = set()
        for _ in range(3):
            audio = await tts.synthesize("Hi there.", **PARAMS)
            assert audio == b"".join(expected_stream("Hi there.", None, PARAMS))
            # The default picks the running loop's transport at the first request.
            transport = tts._transport.inner  # type: ignore[attr-defined]
            assert isinstance(transport, TrioTransport)
            (connection,) = transport._endpoints[server.base_url].idle
            sockets.add(connection.socket)
        assert len(sockets) == 1  # the whole client path hands connections back
        async with tts.open_stream("Hi there.", chunks=50, chunk_samples=480) as audio:
            await audio.__anext__()  # leave after the first chunk
        assert transport._endpoints[server.base_url].idle == []
        assert next(iter(sockets)).fileno() == -1


async def test_closing_early_closes_the_connection(start_server: StartServer) -> None:
    server = await start_server()
    transport = TrioTransport()
    response = await transport.open_stream(
        request(server.base_url, stall_s=30, stall_after=1)
    )
    assert await response.receive()
    connection = response._connection  # type: ignore[attr-defined]
    await response.aclose()
    assert connection.socket.fileno() == -1
    assert transport._endpoints[server.base_url].idle == []
    with trio.fail_after(5):
        while server.engine.requests_cancelled < 1:  # type: ignore[attr-defined]
            await trio.sleep(0.01)
    # The next request gets a fresh connection and works.
    response = await transport.open_stream(request(server.base_url))
    assert response.status == 200 and await read_body(response)
    await response.aclose()
    await transport.aclose()


async def test_connections_per_endpoint_are_bounded(start_server: StartServer) -> None:
    server = await start_server()
    stalled = request(server.base_url, stall_s=30, stall_after=1)
    transport = TrioTransport(max_connections_per_endpoint=2, connect_timeout_s=0.2)
    first = await transport.open_stream(stalled)
    second = await transport.open_stream(stalled)
    with trio.fail_after(2), pytest.raises(httpx.PoolTimeout):
        await transport.open_stream(request(server.base_url))

    opened: list[ResponseStream] = []
    patient = TrioTransport(max_connections_per_endpoint=1)
    held = await patient.open_stream(stalled)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(_open_into, patient, request(server.base_url), opened)
        )
        await trio.sleep(0.2)
        assert opened == []  # waiting for the one slot
        await held.aclose()
    assert opened[0].status == 200 and await read_body(opened[0])
    for response in (first, second, opened[0]):
        await response.aclose()
    await transport.aclose()
    await patient.aclose()


async def _open_into(
    transport: TrioTransport, req: StreamRequest, into: list[ResponseStream]
) -> None:
    into.append(await transport.open_stream(req))


async def test_connection_close_is_honoured(nursery: trio.Nursery) -> None:
    server = await raw_server(nursery, good())
    transport = TrioTransport()
    response = await transport.open_stream(request(server.url))
    assert await read_body(response) == b"".join(good_lines(0))
    await response.aclose()
    assert transport._endpoints[server.url].idle == []
    assert await server.wait_connections_closed() == 0
    await transport.aclose()


async def test_content_length_body_and_reuse(nursery: trio.Nursery) -> None:
    reply = send(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
    server = await raw_server(nursery, reply)
    transport = TrioTransport()
    response = await transport.open_stream(request(server.url))
    assert await read_body(response) == b"hello world"
    await response.aclose()
    assert len(transport._endpoints[server.url].idle) == 1  # kept for reuse
    await transport.aclose()
    assert await server.wait_connections_closed() == 0


async def test_chunked_body_with_a_content_length_is_not_reused(
    nursery: trio.Nursery,
) -> None:
    # RFC 9112 6.3: Transfer-Encoding wins, and the connection must be closed,
    # since something on the path may have framed the body by the length.
    reply = send(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    server = await raw_server(nursery, reply)
    transport = TrioTransport()
    response = await transport.open_stream(request(server.url))
    assert await read_body(response) == b"hello"
    await response.aclose()
    assert transport._endpoints[server.url].idle == []
    assert await server.wait_connections_closed() == 0
    await transport.aclose()


async def test_body_until_close(nursery: trio.Nursery) -> None:
    server = await raw_server(
        nursery, send(b"HTTP/1.0 200 OK\r\n\r\nall of it", then_close=True)
    )
    transport = TrioTransport()
    response = await transport.open_stream(request(server.url))
    assert await read_body(response) == b"all of it"
    await response.aclose()
    assert transport._endpoints[server.url].idle == []  # no framing: never reused
    await transport.aclose()


async def test_idle_connection_closed_by_the_peer_is_not_reused(
    nursery: trio.Nursery,
) -> None:
    reply = send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", then_close=True)
    server = await raw_server(nursery, reply)
    transport = TrioTransport()
    for _ in range(2):
        response = await transport.open_stream(request(server.url))
        assert await read_body(response) == b"ok"
        await response.aclose()
        await trio.sleep(0.05)  # the server's FIN arrives while the connection is idle
    assert (server.connections, server.requests) == (2, 2)
    await transport.aclose()


async def test_reused_connection_dropped_by_the_peer_is_retried_once_fresh(
    nursery: trio.Nursery,
) -> None:
    async def answer_then_drop_the_next(conn: Conn) -> None:
        await conn.stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await conn.stream.receive_some(65536)  # the next request: closed unanswered

    server = await raw_server(nursery, answer_then_drop_the_next)
    transport = TrioTransport()
    for _ in range(2):
        response = await transport.open_stream(request(server.url))
        assert await read_body(response) == b"ok"
        await response.aclose()
    assert (server.connections, server.requests) == (2, 2)
    await transport.aclose()


async def test_redirects_are_not_followed(nursery: trio.Nursery) -> None:
    reply = send(
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    )
    server = await raw_server(nursery, reply)
    async with OrpheusTTS(server.url, hedge_ttfb_ms=None, hedging=Hedging(max_attempts=1)) as tts:
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await tts.synthesize("hi")
    assert caught.value.response.status_code == 302
    assert server.requests == 1


# -- malformed and cut responses -----------------------------------------------------------


async def test_missing_final_chunk_is_an_incomplete_stream(
    nursery: trio.Nursery,
) -> None:
    async def reply(conn: Conn) -> None:
        await conn.send_stream_head()
        await conn.send_piece(b"abc")  # then FIN, no last chunk

    server = await raw_server(nursery, reply)
    transport = TrioTransport()
    response = await transport.open_stream(request(server.url))
    with pytest.raises(IncompleteStreamError):
        await read_body(response)
    await response.aclose()
    await transport.aclose()


async def test_malformed_chunk_size_names_the_request(nursery: trio.Nursery) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = await raw_server(nursery, send(head + b"zz\r\nabc\r\n"))
    transport = TrioTransport()
    response = await transport.open_stream(request(server.url))
    with pytest.raises(httpx.RemoteProtocolError, match="chunk size") as caught:
        await response.receive()
    assert str(caught.value.request.url) == server.url + "/v1/tts/stream"
    await response.aclose()
    assert await server.wait_connections_closed() == 0
    await transport.aclose()


#: Forms a strict parser refuses, as a server sends them (the sans-IO table is in
#: test_http11.py): each must surface as httpx's type, never be read as a body.
STRICTLY_REFUSED = {
    "chunk extension ending in a bare LF": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;\nX\r\nhello\r\n0\r\n\r\n"
    ),
    "trailer line ending in a bare LF": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\nB: 2\r\n\r\n"
    ),
    "NUL in a trailer": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: \x00\r\n\r\n"
    ),
    "chunk size overflow": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"f" * 17
        + b"\r\nhello\r\n"
    ),
    "Transfer-Encoding repeated": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("form", STRICTLY_REFUSED)
async def test_strictly_refused_framing_is_httpx_remote_protocol_error(
    nursery: trio.Nursery, form: str
) -> None:
    server = await raw_server(nursery, send(STRICTLY_REFUSED[form]))
    transport = TrioTransport()
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        response = await transport.open_stream(request(server.url))
        try:
            await read_body(response)
        finally:
            await response.aclose()
    assert str(caught.value.request.url) == server.url + "/v1/tts/stream"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert await server.wait_connections_closed() == 0  # never reused
    await transport.aclose()


async def test_oversized_head_is_refused(nursery: trio.Nursery) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: yyyyyyyyyy\r\n" * 5000 + b"\r\n"
    server = await raw_server(nursery, send(head))
    transport = TrioTransport()
    with pytest.raises(httpx.RemoteProtocolError, match="larger than"):
        await transport.open_stream(request(server.url))
    assert await server.wait_connections_closed() == 0
    assert transport._endpoints[server.url].slots.value == 64  # the slot came back


async def test_closed_without_an_answer(nursery: trio.Nursery) -> None:
    server = await raw_server(nursery, send(b"", then_close=True))
    with pytest.raises(httpx.RemoteProtocolError, match="before a response"):
        await TrioTransport().open_stream(request(server.url))
    assert server.requests == 1  # a fresh connection is not retried


async def test_garbage_instead_of_a_response(nursery: trio.Nursery) -> None:
    server = await raw_server(nursery, send(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(httpx.RemoteProtocolError, match="status line"):
        await TrioTransport().open_stream(request(server.url))
    assert await server.wait_connections_closed() == 0


@pytest.mark.parametrize("status", [b"000", b"099"])
async def test_status_below_100_is_refused_not_waited_on_as_informational(
    nursery: trio.Nursery, status: bytes
) -> None:
    server = await raw_server(nursery, send(b"HTTP/1.1 " + status + b" Odd\r\n\r\n"))
    with (
        trio.fail_after(2),
        pytest.raises(httpx.RemoteProtocolError, match="status line"),
    ):
        await TrioTransport().open_stream(request(server.url))
    assert await server.wait_connections_closed() == 0


# -- timeouts and cancellation --------------------------------------------------------------


async def mute(conn: Conn) -> None:
    """Accept the connection and say nothing until the client hangs up."""
    await conn.until_client_closes()


async def test_read_timeout_before_the_head(nursery: trio.Nursery) -> None:
    server = await raw_server(nursery, mute)
    transport = TrioTransport(read_timeout_s=0.2)
    started = trio.current_time()
    with trio.fail_after(3), pytest.raises(httpx.ReadTimeout):
        await transport.open_stream(request(server.url))
    assert 0.15 < trio.current_time() - started < 1.5
    assert await server.wait_connections_closed() == 0
    assert await watchdogs() == 0


async def test_read_timeout_mid_body_closes_the_connection(
    nursery: trio.Nursery,
) -> None:
    server = await raw_server(nursery, silence_after([b'{"type":"chunk"']))
    transport = TrioTransport(read_timeout_s=0.2)
    response = await transport.open_stream(request(server.url))
    assert await response.receive() == b'{"type":"chunk"'
    with trio.fail_after(3), pytest.raises(httpx.ReadTimeout):
        await response.receive()
    assert await server.wait_connections_closed() == 0
    await response.aclose()
    assert await watchdogs() == 0


async def test_cancelled_read_closes_the_connection(nursery: trio.Nursery) -> None:
    server = await raw_server(nursery, silence_after([]))
    transport = TrioTransport()
    response = await transport.open_stream(request(server.url))
    with trio.move_on_after(0.1) as scope:
        await response.receive()
    assert scope.cancelled_caught
    await response.aclose()
    assert transport._endpoints[server.url].idle == []
    assert await server.wait_connections_closed() == 0


async def test_cancelled_open_closes_the_connection(nursery: trio.Nursery) -> None:
    server = await raw_server(nursery, mute)
    transport = TrioTransport(max_connections_per_endpoint=1)
    with trio.move_on_after(0.1) as scope:
        await transport.open_stream(request(server.url))
    assert scope.cancelled_caught
    assert await server.wait_connections_closed() == 0
    assert transport._endpoints[server.url].slots.value == 1
    assert await watchdogs() == 0


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_server(
    nursery: trio.Nursery,
    ca: trustme.CA,
    answer: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret",
) -> str:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handle(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, server_context, server_side=True)
        try:
            data = b""
            while piece := await stream.receive_some(65536):  # until the client goes
                data += piece
                while b"\r\n\r\n" in data:  # keep-alive: answer each request
                    _, _, data = data.partition(b"\r\n\r\n")
                    await stream.send_all(answer)
        except trio.BrokenResourceError:
            pass  # the client refused our certificate
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(
        partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
    )
    return f"https://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_handshake_that_never_ends_is_a_connect_timeout(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    server = await raw_server(nursery, mute)  # accepts TCP, never speaks TLS
    url = server.url.replace("http://", "https://")
    transport = TrioTransport(ssl_context=trusting(ca), connect_timeout_s=0.2)
    with trio.fail_after(3), pytest.raises(httpx.ConnectTimeout):
        await transport.open_stream(request(url))
    assert await server.wait_connections_closed() == 0
    assert transport._endpoints[url].slots.value == 64


async def test_tls_read_timeout_closes_the_connection(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    head_only = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nse"  # then silence
    url = await tls_server(nursery, ca, answer=head_only)
    transport = TrioTransport(ssl_context=trusting(ca), read_timeout_s=0.2)
    response = await transport.open_stream(request(url))
    assert await response.receive() == b"se"
    connection = response._connection  # type: ignore[attr-defined]
    with trio.fail_after(3), pytest.raises(httpx.ReadTimeout):
        await response.receive()
    assert connection.socket.fileno() == -1
    await response.aclose()
    assert await watchdogs() == 0


async def test_tls_verifies_certificates_by_default(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    url = await tls_server(nursery, ca)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await TrioTransport().open_stream(request(url))


async def test_tls_with_a_trusted_ca(nursery: trio.Nursery, ca: trustme.CA) -> None:
    url = await tls_server(nursery, ca)
    transport = TrioTransport(ssl_context=trusting(ca))
    sockets = set()
    for _ in range(2):
        response = await transport.open_stream(request(url))
        assert (response.status, await read_body(response)) == (200, b"secret")
        sockets.add(response._connection.socket)  # type: ignore[attr-defined]
        await response.aclose()
    assert len(sockets) == 1  # the TLS connection was kept alive and reused
    await transport.aclose()


async def test_tls_hostname_is_checked(nursery: trio.Nursery, ca: trustme.CA) -> None:
    url = await tls_server(nursery, ca)
    context = trusting(ca)
    wrong_name = url.replace(
        "127.0.0.1", "localhost"
    )  # the certificate names 127.0.0.1 only
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await TrioTransport(ssl_context=context).open_stream(request(wrong_name))


async def test_verify_off_only_when_asked_and_with_a_warning(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    url = await tls_server(nursery, ca)
    with pytest.warns(InsecureTransportWarning):
        transport = TrioTransport(verify=False)
    response = await transport.open_stream(request(url))
    assert await read_body(response) == b"secret"
    await response.aclose()
    await transport.aclose()
    with pytest.raises(ValueError, match="not both"):
        TrioTransport(verify=False, ssl_context=ssl.create_default_context())


async def test_client_passes_its_ssl_context_on(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    url = await tls_server(nursery, ca)
    context = trusting(ca)
    for engine in ("trio", "httpx"):
        tts = OrpheusTTS(url, ssl_context=context, transport=engine)
        request_ = StreamRequest(url, "/", {}, b"")
        response = await tts._transport.open_stream(request_)
        assert response.status == 200
        await response.aclose()
        await tts.close()
    with pytest.raises(ValueError, match="transport"):
        OrpheusTTS(url, transport="curl")  # type: ignore[arg-type,unused-ignore]
