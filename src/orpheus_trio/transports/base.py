"""The HTTP seam: one streamed request in, status + headers + body bytes out.

Everything above this module (routing, hedging, frame decoding, errors) talks
to a :class:`Transport`; nothing above it knows which HTTP engine runs. The
client's default is :class:`~orpheus_trio.transports.loop.LoopTransport`
(HTTP/1.1 on the sockets of the loop that runs the request, about a third
less CPU per request than httpx); the :class:`HttpxTransport` here keeps one
pooled ``httpx.AsyncClient`` per endpoint with bounded connections and
keep-alive. Tests pass a scripted fake.

Transports raise httpx's exception types for network faults
(``httpx.ConnectError``, ``httpx.ReadTimeout``, ``httpx.ReadError``,
``httpx.RemoteProtocolError``), so the layers above can classify them.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT",
    "DEFAULT_READ_TIMEOUT_S",
    "HttpxResponseStream",
    "HttpxTransport",
    "ResponseStream",
    "StreamRequest",
    "Transport",
]

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 60.0
DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT = 64


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A POST to ``endpoint`` + ``path`` whose response body is read as a stream."""

    endpoint: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    method: str = "POST"

    @property
    def url(self) -> str:
        return self.endpoint.rstrip("/") + self.path

    def json(self) -> Any:
        """The body, parsed (the client sends JSON)."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        # Headers hold the API key: never show them.
        return f"StreamRequest({self.method} {self.url}, {len(self.body)} bytes)"


class ResponseStream(Protocol):
    """An open response: status and headers now, the body as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers; lookups are case-insensitive."""
        ...

    async def receive(self) -> bytes:
        """The next piece of body bytes; ``b""`` at the end of the body."""
        ...

    async def aclose(self) -> None:
        """Release the response (and its connection if the body was not read to the end)."""
        ...


class Transport(Protocol):
    """Opens streamed HTTP responses."""

    async def open_stream(self, request: StreamRequest) -> ResponseStream: ...

    async def aclose(self) -> None: ...


class HttpxResponseStream:
    """A :class:`ResponseStream` over a streamed ``httpx.Response``."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._body: AsyncIterator[bytes] = response.aiter_raw()

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def receive(self) -> bytes:
        try:
            return await anext(self._body)
        except StopAsyncIteration:
            return b""

    async def aclose(self) -> None:
        aclose = getattr(self._body, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._response.aclose()


class HttpxTransport:
    """One pooled ``httpx.AsyncClient`` per endpoint: bounded connections, keep-alive."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
        max_connections_per_endpoint: int = DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        if max_connections_per_endpoint < 1:
            raise ValueError("max_connections_per_endpoint must be >= 1")
        self._timeout = httpx.Timeout(
            connect=connect_timeout_s,
            read=read_timeout_s,
            write=connect_timeout_s,
            pool=connect_timeout_s,
        )
        self._limits = httpx.Limits(
            max_connections=max_connections_per_endpoint,
            max_keepalive_connections=max_connections_per_endpoint,
            keepalive_expiry=30.0,
        )
        self._verify = verify
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._closed = False

    def _client(self, endpoint: str) -> httpx.AsyncClient:
        client = self._clients.get(endpoint)
        if client is None:
            if self._closed:
                raise RuntimeError("transport is closed")
            client = httpx.AsyncClient(
                timeout=self._timeout, limits=self._limits, verify=self._verify
            )
            self._clients[endpoint] = client
        return client

    async def open_stream(self, request: StreamRequest) -> ResponseStream:
        client = self._client(request.endpoint)
        http_request = client.build_request(
            request.method,
            request.url,
            headers=dict(request.headers),
            content=request.body,
        )
        response = await client.send(http_request, stream=True)
        return HttpxResponseStream(response)

    async def aclose(self) -> None:
        self._closed = True
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
