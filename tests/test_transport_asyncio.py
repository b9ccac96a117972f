"""AsyncioTransport on real sockets: pooling, faults, timeouts, cancellation, TLS.

The pool and framing are shared with TrioTransport (test_transport_trio.py
covers the framing cases); here the asyncio socket layer: its reads, its read
timer, closing on cancellation, and TLS through asyncio's ``ssl=``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest
import trustme

from orpheus_trio.transports.asyncio import AsyncioTransport
from orpheus_trio.errors import IncompleteStreamError
from orpheus_trio.server.engines.synthetic import expected_stream
from orpheus_trio.transports.base import ResponseStream, StreamRequest

pytestmark = pytest.mark.anyio
PARAMS = {"chunk_samples": 480, "chunks": 4}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def request(base_url: str) -> StreamRequest:
    body = json.dumps({"text": "Hi there.", **PARAMS}).encode()
    return StreamRequest(base_url, "/v1/tts/stream", {"Content-Type": "application/json"}, body)


async def read_body(response: ResponseStream) -> bytes:
    body = bytearray()
    while data := await response.receive():
        body += data
    return bytes(body)


class RawServer:
    """An asyncio server answering each connection with ``handler``; counts open connections."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.open = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.open += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                self.open -= 1
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def wait_closed_by_client(self) -> int:
        for _ in range(200):
            if not self.open:
                break
            await asyncio.sleep(0.01)
        return self.open


async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # say nothing until the client hangs up


def answer(data: bytes, *, then: Handler = mute) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(data)
        await writer.drain()
        await then(reader, writer)

    return handler


async def test_full_reads_reuse_one_connection(threaded_server: Callable[..., str]) -> None:
    url = threaded_server()
    transport = AsyncioTransport()
    expected = b"".join(expected_stream("Hi there.", None, PARAMS))
    seen = set()
    for _ in range(3):
        response = await transport.open_stream(request(url))
        assert response.status == 200
        body = await read_body(response)
        assert b'"type":"eos"' in body and len(body) > len(expected)
        await response.aclose()
        (connection,) = transport._endpoints[url].idle
        seen.add(id(connection))
    assert len(seen) == 1
    await transport.aclose()
    assert transport._endpoints == {}


async def test_content_length_body_and_reuse() -> None:
    async def twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(request("http://x").body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await mute(reader, writer)

    async with RawServer(twice) as url:
        transport = AsyncioTransport()
        for _ in range(2):
            response = await transport.open_stream(request(url))
            assert await read_body(response) == b"hello"
            await response.aclose()
        assert len(transport._endpoints[url].idle) == 1
        await transport.aclose()


async def test_body_cut_short_is_an_incomplete_stream() -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with RawServer(answer(reply, then=cut)) as url:
        transport = AsyncioTransport()
        response = await transport.open_stream(request(url))
        assert await response.receive() == b"hello"
        with pytest.raises(IncompleteStreamError):
            await response.receive()
        await response.aclose()
        assert transport._endpoints[url].idle == []


#: Forms a strict parser refuses (the sans-IO table is in test_http11.py).
STRICTLY_REFUSED = {
    "chunk extension ending in a bare LF": b"5;\nX\r\nhello\r\n0\r\n\r\n",
    "trailer line ending in a bare LF": b"0\r\nA: 1\nB: 2\r\n\r\n",
    "NUL in a trailer": b"0\r\nA: \x00\r\n\r\n",
    "chunk size overflow": b"f" * 17 + b"\r\nhello\r\n",
    "Transfer-Encoding repeated": b"5\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("form", STRICTLY_REFUSED)
async def test_strictly_refused_framing_is_httpx_remote_protocol_error(form: str) -> None:
    te = b"Transfer-Encoding: chunked\r\n" * (2 if form == "Transfer-Encoding repeated" else 1)
    reply = b"HTTP/1.1 200 OK\r\n" + te + b"\r\n" + STRICTLY_REFUSED[form]
    server = RawServer(answer(reply))
    async with server as url:
        transport = AsyncioTransport()
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            response = await transport.open_stream(request(url))
            try:
                await read_body(response)
            finally:
                await response.aclose()
        assert str(caught.value.request.url) == url + "/v1/tts/stream"
        assert await server.wait_closed_by_client() == 0  # never reused
        await transport.aclose()


async def test_read_timeout_before_the_head_closes_the_connection() -> None:
    server = RawServer(mute)
    async with server as url:
        transport = AsyncioTransport(read_timeout_s=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await asyncio.wait_for(transport.open_stream(request(url)), 3)
        assert 0.15 < loop.time() - started < 1.5
        assert await server.wait_closed_by_client() == 0
        assert transport._endpoints[url].slots.value == transport._max_connections


async def test_read_timeout_mid_body() -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    server = RawServer(answer(reply))
    async with server as url:
        transport = AsyncioTransport(read_timeout_s=0.2)
        response = await transport.open_stream(request(url))
        assert await response.receive() == b"hello"
        with pytest.raises(httpx.ReadTimeout):
            await asyncio.wait_for(response.receive(), 3)
        await response.aclose()
        assert await server.wait_closed_by_client() == 0


async def test_cancelled_read_closes_the_connection() -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = RawServer(answer(reply))
    async with server as url:
        transport = AsyncioTransport()
        response = await transport.open_stream(request(url))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await response.receive()
        await response.aclose()
        assert transport._endpoints[url].idle == []
        assert await server.wait_closed_by_client() == 0


async def test_connections_per_endpoint_are_bounded() -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with RawServer(answer(reply)) as url:
        transport = AsyncioTransport(max_connections_per_endpoint=1, connect_timeout_s=0.2)
        first = await transport.open_stream(request(url))
        with pytest.raises(httpx.PoolTimeout):
            await transport.open_stream(request(url))
        await first.aclose()
        await transport.aclose()


async def test_connect_error_keeps_httpx_type() -> None:
    async with RawServer(mute) as url:
        pass  # closed: nothing listens on that port any more
    with pytest.raises(httpx.ConnectError):
        await AsyncioTransport().open_stream(request(url))


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> Iterator[ssl.SSLContext]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    yield context


SECRET_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"


async def test_tls_verifies_certificates_by_default(server_tls: ssl.SSLContext) -> None:
    async with RawServer(answer(SECRET_REPLY), server_tls) as url:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await AsyncioTransport().open_stream(request(url))


async def test_tls_with_a_trusted_ca(server_tls: ssl.SSLContext, ca: trustme.CA) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with RawServer(answer(SECRET_REPLY), server_tls) as url:
        transport = AsyncioTransport(ssl_context=trusting)
        response = await transport.open_stream(request(url))
        assert await read_body(response) == b"secret"
        await response.aclose()
        await transport.aclose()
