"""HTTP/1.1 with a keep-alive pool, over any event loop's sockets.

The loop-neutral half of the fast transports
(:class:`~orpheus_trio.transports.trio.TrioTransport`,
:class:`~orpheus_trio.transports.asyncio.AsyncioTransport`): the pool, the
request and response framing (sans-IO, :mod:`~orpheus_trio._http.h1`), and the
rules of reuse. A subclass brings the sockets: how to connect (TCP, TLS), and a
:class:`Connection` that sends, reads up to 64 KiB at a time and enforces the
read timeout its own cheapest way.

Why not httpx: httpx wakes the reader once per HTTP chunk and its pool
bookkeeping grows with concurrency. Here each read takes everything that
arrived and :class:`~orpheus_trio._http.h1.ChunkedDecoder` turns it into one
piece of body bytes, so the frame decoder gets big pieces and the client wakes
once per read.

What it keeps: TLS with certificate verification (``ssl.create_default_context()``
unless an ``ssl_context`` is given; ``verify=False`` only on request, with a
warning), a bounded keep-alive pool per endpoint (a connection goes back only
after its response was read to the end; an unfinished or cancelled response
closes it), connect and read timeouts, no redirects (a 3xx is just a status),
and httpx's exception types: ``httpx.ConnectError``/``ConnectTimeout``,
``httpx.PoolTimeout``, ``httpx.ReadTimeout``, ``httpx.ReadError``/``WriteError``,
``httpx.RemoteProtocolError`` and :class:`~orpheus_trio.errors.IncompleteStreamError`
for a body cut short.
"""

from __future__ import annotations

import ssl
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import httpx

from ..errors import IncompleteStreamError
from .h1 import (
    BodyFraming,
    ChunkedDecoder,
    Framing,
    H1ProtocolError,
    ResponseHead,
    body_framing,
    encode_request,
    find_head_end,
    parse_response_head,
)
from ..transports.base import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
    DEFAULT_READ_TIMEOUT_S,
    ResponseStream,
    StreamRequest,
)

__all__ = [
    "DEFAULT_KEEPALIVE_EXPIRY_S",
    "RECEIVE_BYTES",
    "Connection",
    "InsecureTransportWarning",
    "PooledResponse",
    "PooledTransport",
    "http_request",
    "remote_protocol_error",
    "warn_verification_off",
]

#: Bytes asked of the socket per read (below glibc's mmap threshold: cheap to allocate).
RECEIVE_BYTES = 64 * 1024
#: An idle pooled connection older than this is closed instead of reused.
DEFAULT_KEEPALIVE_EXPIRY_S = 5.0


class InsecureTransportWarning(UserWarning):
    """TLS certificate verification was turned off."""


def warn_verification_off(stacklevel: int = 2) -> None:
    """Warn that ``verify=False`` turned certificate checks off; ``stacklevel`` as
    :func:`warnings.warn` counts it from the caller (2: the caller's caller)."""
    warnings.warn(
        "TLS certificate verification is off (verify=False): "
        "any server can pose as the endpoint",
        InsecureTransportWarning,
        stacklevel=stacklevel + 1,
    )


def http_request(request: StreamRequest) -> httpx.Request:
    """An ``httpx.Request`` for error constructors (built only when an error is raised)."""
    return httpx.Request(request.method, request.url)


def remote_protocol_error(
    error: H1ProtocolError, request: StreamRequest
) -> httpx.RemoteProtocolError:
    """The public type for a peer that broke HTTP, from the sans-IO layer's own."""
    return httpx.RemoteProtocolError(str(error), request=http_request(request))


class Connection(ABC):
    """One socket (plain or TLS) of a loop, and the bytes read past the last response."""

    __slots__ = ("idle_since", "leftover", "reused")

    def __init__(self) -> None:
        self.leftover = b""
        self.idle_since = 0.0
        self.reused = False

    @abstractmethod
    async def send_all(self, data: bytes, request: StreamRequest) -> None:
        """Send every byte; ``httpx.WriteError`` when the connection broke."""

    @abstractmethod
    async def receive(self, request: StreamRequest) -> bytes:
        """What arrived (up to :data:`RECEIVE_BYTES`); ``b""`` at EOF;
        ``httpx.ReadTimeout`` past the read timeout, ``httpx.ReadError`` when broken."""

    @abstractmethod
    def close_now(self) -> None:
        """Close the socket now, without a TLS close_notify (never blocks, never raises)."""

    @abstractmethod
    def peer_spoke(self) -> bool:
        """Whether the peer sent something (or closed) while the connection was idle."""

    def is_stale(self, now: float, expiry_s: float) -> bool:
        # Readable while idle means the peer closed it (or sent junk): not reusable.
        return now - self.idle_since > expiry_s or self.peer_spoke()


class _Endpoint:
    """The pool of one endpoint: a bound on connections, idle ones kept for reuse."""

    __slots__ = ("host", "idle", "port", "slots", "target_prefix", "tls")

    def __init__(self, endpoint: str, max_connections: int) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"endpoint must be http(s)://host[:port][/path], got {endpoint!r}"
            )
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.target_prefix = parts.path.rstrip("/")
        self.idle: list[Connection] = []
        self.slots = anyio.Semaphore(max_connections)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


class PooledTransport(ABC):
    """HTTP/1.1 pooled per endpoint; a subclass supplies :meth:`_open_connection`."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
        max_connections_per_endpoint: int = DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
        keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
        warn: bool = True,
    ) -> None:
        """``warn=False``: the caller already warned about ``verify=False``."""
        if max_connections_per_endpoint < 1:
            raise ValueError("max_connections_per_endpoint must be >= 1")
        if ssl_context is not None and not verify:
            raise ValueError("give ssl_context or verify=False, not both")
        if not verify and warn:
            warn_verification_off()
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_connections = max_connections_per_endpoint
        self._keepalive_expiry_s = keepalive_expiry_s
        self._ssl_context = ssl_context
        self._verify = verify
        self._endpoints: dict[str, _Endpoint] = {}
        self._open_responses = 0  # opening or open: while > 0 a read timer may run
        self._closed = False

    @abstractmethod
    async def _open_connection(
        self, host: str, port: int, tls: ssl.SSLContext | None
    ) -> Connection:
        """A new connection (TLS handshake done when ``tls``); raises ``OSError``
        (``ssl.SSLError`` included) when it cannot be made."""

    def _responses_done(self) -> None:
        """No response is open any more: a read timer may stop."""

    def _endpoint(self, endpoint: str) -> _Endpoint:
        pool = self._endpoints.get(endpoint)
        if pool is None:
            if self._closed:
                raise RuntimeError("transport is closed")
            pool = self._endpoints[endpoint] = _Endpoint(
                endpoint, self._max_connections
            )
        return pool

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()
            if not self._verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def open_stream(self, request: StreamRequest) -> ResponseStream:
        pool = self._endpoint(request.endpoint)
        data = encode_request(
            request.method,
            pool.target_prefix + request.path,
            pool.host_header,
            request.headers,
            request.body,
        )
        await self._acquire_slot(pool, request)
        self._open_responses += 1
        try:
            while True:
                connection = self._idle_connection(pool)
                if connection is None:
                    connection = await self._connect(pool, request)
                try:
                    await self._send(connection, data, request)
                    head, framing = await self._read_head(connection, request)
                except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                    connection.close_now()
                    if connection.reused and not connection.leftover:
                        # Not a byte of an answer on a reused connection: the peer
                        # closed it while idle, as we reused it. Once more, fresh.
                        continue
                    raise
                except BaseException:
                    connection.close_now()
                    raise
                return PooledResponse(self, pool, connection, request, head, framing)
        except BaseException:
            pool.slots.release()
            self._response_ended()
            raise

    async def _acquire_slot(self, pool: _Endpoint, request: StreamRequest) -> None:
        try:
            pool.slots.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        with anyio.move_on_after(self._connect_timeout_s) as scope:
            await pool.slots.acquire()
        if scope.cancelled_caught:
            raise httpx.PoolTimeout(
                f"no free connection to {request.endpoint} within {self._connect_timeout_s} s "
                f"({self._max_connections} in use)",
                request=http_request(request),
            )

    def _idle_connection(self, pool: _Endpoint) -> Connection | None:
        if not pool.idle:
            return None
        now = anyio.current_time()
        while pool.idle:
            connection = pool.idle.pop()
            if connection.is_stale(now, self._keepalive_expiry_s):
                connection.close_now()
                continue
            connection.reused = True
            return connection
        return None

    async def _connect(self, pool: _Endpoint, request: StreamRequest) -> Connection:
        connection: Connection | None = None
        tls = self._tls_context() if pool.tls else None
        with anyio.move_on_after(self._connect_timeout_s) as scope:
            try:
                connection = await self._open_connection(pool.host, pool.port, tls)
            except OSError as error:
                raise httpx.ConnectError(
                    f"cannot connect to {request.endpoint}: {error}",
                    request=http_request(request),
                ) from error
        if connection is None or scope.cancelled_caught:
            if connection is not None:
                connection.close_now()
            raise httpx.ConnectTimeout(
                f"no connection to {request.endpoint} within {self._connect_timeout_s} s",
                request=http_request(request),
            )
        return connection

    async def _send(
        self, connection: Connection, data: bytes, request: StreamRequest
    ) -> None:
        with anyio.move_on_after(self._connect_timeout_s) as scope:
            await connection.send_all(data, request)
        if scope.cancelled_caught:
            raise httpx.WriteTimeout(
                f"sending to {request.endpoint} took over {self._connect_timeout_s} s",
                request=http_request(request),
            )

    async def _read_head(
        self, connection: Connection, request: StreamRequest
    ) -> tuple[ResponseHead, BodyFraming]:
        buffer = b""
        while True:
            try:
                end = find_head_end(buffer)
                while end < 0:
                    data = await connection.receive(request)
                    if not data:
                        raise httpx.RemoteProtocolError(
                            f"{request.endpoint} closed the connection before a response"
                            if not buffer
                            else f"{request.endpoint} closed the connection mid-head"
                        )
                    connection.leftover = buffer = buffer + data
                    end = find_head_end(buffer, len(buffer) - len(data))
                head = parse_response_head(buffer[: end - 2])
                framing = body_framing(head, request_method=request.method)
            except H1ProtocolError as error:
                raise remote_protocol_error(error, request) from None
            except httpx.RemoteProtocolError as error:
                error.request = http_request(request)
                raise
            buffer = buffer[end:]
            connection.leftover = buffer
            if head.status >= 200:
                return head, framing
            if head.status == 101:
                raise httpx.RemoteProtocolError(
                    "unexpected 101 Switching Protocols", request=http_request(request)
                )
            # 1xx informational: the real response follows.

    def _response_ended(self) -> None:
        self._open_responses -= 1
        if not self._open_responses:
            self._responses_done()

    def _release(
        self, pool: _Endpoint, connection: Connection, reusable: bool
    ) -> None:
        pool.slots.release()
        self._response_ended()
        if reusable and not self._closed:
            connection.idle_since = anyio.current_time()
            connection.reused = False
            pool.idle.append(connection)
        else:
            connection.close_now()

    async def aclose(self) -> None:
        self.abandon()
        await anyio.lowlevel.checkpoint()

    def abandon(self) -> None:
        """Close the idle connections and take no more requests (without awaiting:
        also from outside the loop that opened them)."""
        self._closed = True
        endpoints, self._endpoints = self._endpoints, {}
        for pool in endpoints.values():
            idle, pool.idle = pool.idle, []
            for connection in idle:
                connection.close_now()


class PooledResponse:
    """A :class:`~orpheus_trio.transports.base.ResponseStream` on a pooled connection."""

    __slots__ = (
        "_chunked",
        "_connection",
        "_done",
        "_framing",
        "_pool",
        "_remaining",
        "_request",
        "_reusable",
        "_transport",
        "headers",
        "status",
    )

    def __init__(
        self,
        transport: PooledTransport,
        pool: _Endpoint,
        connection: Connection,
        request: StreamRequest,
        head: ResponseHead,
        framing: BodyFraming,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._connection: Connection | None = connection
        self._request = request
        self.status = head.status
        self.headers: Mapping[str, str] = head.headers
        self._framing = framing.framing
        self._remaining = framing.length
        self._chunked = ChunkedDecoder() if framing.framing is Framing.CHUNKED else None
        self._reusable = framing.keep_alive
        self._done = framing.framing is Framing.EMPTY or (
            framing.framing is Framing.LENGTH and framing.length == 0
        )
        if self._done and connection.leftover:
            self._reusable = (
                False  # bytes after an empty body: do not trust this connection
            )

    def __repr__(self) -> str:
        return f"{type(self._transport).__name__}Response({self.status}, {self._request!r})"

    async def receive(self) -> bytes:
        """The next piece of body bytes (everything that arrived); ``b""`` at the end."""
        while not self._done:
            connection = self._connection
            if connection is None:
                raise httpx.ReadError(
                    "the response is closed", request=http_request(self._request)
                )
            data = connection.leftover
            if data:
                connection.leftover = b""
            else:
                try:
                    data = await connection.receive(self._request)
                except BaseException:
                    self._reusable = (
                        False  # cancelled or failed mid-read: state unknown
                    )
                    raise
                if not data:
                    return self._end_of_input()
            chunked = self._chunked
            if chunked is not None:
                try:
                    body, after = chunked.feed(data)
                except H1ProtocolError as error:
                    self._reusable = False
                    raise remote_protocol_error(error, self._request) from None
                if chunked.done:
                    self._finish(after)
            elif self._framing is Framing.LENGTH:
                body = data[: self._remaining]
                self._remaining -= len(body)
                if not self._remaining:
                    self._finish(data[len(body) :])
            else:
                body = data
            if body:
                return body
        return b""

    def _end_of_input(self) -> bytes:
        self._reusable = False
        self._done = True
        if self._framing is Framing.UNTIL_CLOSE:
            return b""
        raise IncompleteStreamError(
            f"{self._request.endpoint} closed the connection before the end of the body"
        )

    def _finish(self, after: bytes) -> None:
        self._done = True
        if after:
            self._reusable = (
                False  # bytes nobody asked for: do not trust this connection
            )

    async def aclose(self) -> None:
        """Give the connection back if the body was read to its end, else close it."""
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._transport._release(
                self._pool, connection, self._done and self._reusable
            )
        await anyio.lowlevel.checkpoint()
