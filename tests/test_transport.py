"""Both transports against the reference server: status, headers, body, pooling, closing.

The seam's contract is checked on each engine; engine internals (the pools)
are checked per engine here and in test_transport_trio.py.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import trio
from _support_server import StartServer

from orpheus_trio.protocol.frames import FrameDecoder
from orpheus_trio.server.engines.synthetic import expected_stream
from orpheus_trio.transports.base import HttpxTransport, StreamRequest, Transport
from orpheus_trio.transports.trio import TrioTransport

PARAMS = {"chunk_samples": 480, "chunks": 4}
ENGINES = {"trio": TrioTransport, "httpx": HttpxTransport}


@pytest.fixture(params=sorted(ENGINES))
def make_transport(request: pytest.FixtureRequest) -> type[Transport]:
    return ENGINES[request.param]


def request(base_url: str, text: str = "Hi there.", **extra: object) -> StreamRequest:
    body = json.dumps({"text": text, **PARAMS, **extra}).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer secret-key"}
    return StreamRequest(
        endpoint=base_url, path="/v1/tts/stream", headers=headers, body=body
    )


async def read_all(transport: Transport, req: StreamRequest) -> tuple[int, bytes]:
    response = await transport.open_stream(req)
    body = bytearray()
    while data := await response.receive():
        body += data
    await response.aclose()
    return response.status, bytes(body)


async def test_streams_status_headers_and_body(
    start_server: StartServer, make_transport: type[Transport]
) -> None:
    server = await start_server()
    transport = make_transport()
    response = await transport.open_stream(request(server.base_url))
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "X-Queue-Depth" in response.headers  # case-insensitive lookups
    decoder, pcm = FrameDecoder(), []
    while data := await response.receive():
        pcm += [f.pcm for f in decoder.feed(data) if hasattr(f, "pcm")]
    decoder.close()
    assert pcm == expected_stream("Hi there.", None, PARAMS)
    assert await response.receive() == b""
    await response.aclose()
    await transport.aclose()


async def test_httpx_one_pooled_client_per_endpoint_reuses_its_connection(
    start_server: StartServer,
) -> None:
    a, b = await start_server(), await start_server()
    transport = HttpxTransport(max_connections_per_endpoint=2)
    for _ in range(3):
        for server in (a, b):
            assert (await read_all(transport, request(server.base_url)))[0] == 200
    clients = transport._clients
    assert set(clients) == {a.base_url, b.base_url}
    for client in clients.values():
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) == 1  # keep-alive: sequential requests share one
    await transport.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await transport.open_stream(request(a.base_url))


async def test_error_status_body_is_readable(
    start_server: StartServer, make_transport: type[Transport]
) -> None:
    server = await start_server()
    status, body = await read_all(
        make_transport(), request(server.base_url, temperature="x")
    )
    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_param"


async def test_closing_mid_stream_cancels_on_the_server(
    start_server: StartServer, make_transport: type[Transport]
) -> None:
    server = await start_server()
    transport = make_transport()
    response = await transport.open_stream(
        request(server.base_url, stall_s=30, stall_after=1)
    )
    assert await response.receive()
    await response.aclose()
    with trio.fail_after(5):
        while server.engine.requests_cancelled < 1:  # type: ignore[attr-defined]
            await trio.sleep(0.01)
    await transport.aclose()


async def test_connect_error_keeps_httpx_type(make_transport: type[Transport]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await make_transport().open_stream(request(f"http://127.0.0.1:{port}"))


def test_request_repr_hides_headers() -> None:
    req = request("http://127.0.0.1:1")
    assert "secret-key" not in repr(req)
    assert req.url == "http://127.0.0.1:1/v1/tts/stream"
    for engine in ENGINES.values():
        with pytest.raises(ValueError):
            engine(max_connections_per_endpoint=0)
