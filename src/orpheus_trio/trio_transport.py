"""HTTP/1.1 on Trio streams: the default :class:`~orpheus_trio.transport.Transport`.

Why not httpx: httpx wakes the reader once per HTTP chunk and its pool
bookkeeping grows with concurrency. Here each read takes up to 64 KiB from the
socket and :class:`~orpheus_trio.http11.ChunkedDecoder` turns everything that
arrived into one piece of body bytes, so the frame decoder gets big pieces and
the client wakes once per read.

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
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx
import trio

from .errors import IncompleteStreamError
from .http11 import (
    BodyFraming,
    ChunkedDecoder,
    Framing,
    ResponseHead,
    body_framing,
    encode_request,
    find_head_end,
    parse_response_head,
)
from .transport import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
    DEFAULT_READ_TIMEOUT_S,
    ResponseStream,
    StreamRequest,
)

__all__ = [
    "DEFAULT_KEEPALIVE_EXPIRY_S",
    "InsecureTransportWarning",
    "TrioResponse",
    "TrioTransport",
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


def _http_request(request: StreamRequest) -> httpx.Request:
    """An ``httpx.Request`` for error constructors (built only when an error is raised)."""
    return httpx.Request(request.method, request.url)


class _Connection:
    """One socket (plain or TLS) and the bytes read past the last response."""

    __slots__ = ("idle_since", "leftover", "reused", "socket", "stream", "timed_out")

    def __init__(
        self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    ) -> None:
        self.stream = stream
        tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        self.socket = tcp.socket
        self.leftover = b""
        self.idle_since = 0.0
        self.reused = False
        self.timed_out = False  # the read watchdog closed it

    def is_stale(self, now: float, expiry_s: float) -> bool:
        # Readable while idle means the peer closed it (or sent junk): not reusable.
        return now - self.idle_since > expiry_s or self.socket.is_readable()


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
        self.idle: list[_Connection] = []
        self.slots = trio.Semaphore(max_connections)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


class _ReadWatchdog:
    """The read timeout of every read in flight, enforced by one system task.

    A cancel scope around each read cost 0.27 ms per streamed request (about a
    fifth of a raw Trio client's whole CPU): instead each read notes when it
    started, and one task
    sleeps until the oldest read's deadline and closes that connection's
    socket if it is still waiting, which wakes the reader. The task runs while
    the transport has responses open (:meth:`stop` when the last one closes).
    """

    __slots__ = ("_reads", "_scope", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._reads: dict[_Connection, float] = {}  # in start order
        self._scope: trio.CancelScope | None = None

    def start_read(self, connection: _Connection) -> None:
        self._reads[connection] = trio.current_time()
        if self._scope is None:
            self._scope = trio.CancelScope()
            trio.lowlevel.spawn_system_task(
                self._run, self._scope, name="orpheus-trio read watchdog"
            )

    def end_read(self, connection: _Connection) -> None:
        self._reads.pop(connection, None)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _run(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                now = trio.current_time()
                expired = [
                    c for c, t in self._reads.items() if now - t >= self.timeout_s
                ]
                for connection in expired:
                    del self._reads[connection]
                    connection.timed_out = True
                    _close_now(connection)
                oldest = next(iter(self._reads.values()), now)
                await trio.sleep_until(oldest + self.timeout_s)


class TrioTransport:
    """HTTP/1.1 over ``trio.open_tcp_stream`` (and ``trio.SSLStream``), pooled per endpoint."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
        max_connections_per_endpoint: int = DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
        keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
    ) -> None:
        if max_connections_per_endpoint < 1:
            raise ValueError("max_connections_per_endpoint must be >= 1")
        if ssl_context is not None and not verify:
            raise ValueError("give ssl_context or verify=False, not both")
        if not verify:
            warn_verification_off()
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._watchdog = (
            _ReadWatchdog(read_timeout_s) if read_timeout_s is not None else None
        )
        self._max_connections = max_connections_per_endpoint
        self._keepalive_expiry_s = keepalive_expiry_s
        self._ssl_context = ssl_context
        self._verify = verify
        self._endpoints: dict[str, _Endpoint] = {}
        self._open_responses = 0  # opening or open: while > 0 the watchdog runs
        self._closed = False

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
                    _close_now(connection)
                    if connection.reused and not connection.leftover:
                        # Not a byte of an answer on a reused connection: the peer
                        # closed it while idle, as we reused it. Once more, fresh.
                        continue
                    raise
                except BaseException:
                    _close_now(connection)
                    raise
                return TrioResponse(self, pool, connection, request, head, framing)
        except BaseException:
            pool.slots.release()
            self._response_ended()
            raise

    async def _acquire_slot(self, pool: _Endpoint, request: StreamRequest) -> None:
        try:
            pool.slots.acquire_nowait()
            return
        except trio.WouldBlock:
            pass
        with trio.move_on_after(self._connect_timeout_s) as scope:
            await pool.slots.acquire()
        if scope.cancelled_caught:
            raise httpx.PoolTimeout(
                f"no free connection to {request.endpoint} within {self._connect_timeout_s} s "
                f"({self._max_connections} in use)",
                request=_http_request(request),
            )

    def _idle_connection(self, pool: _Endpoint) -> _Connection | None:
        now = trio.current_time()
        while pool.idle:
            connection = pool.idle.pop()
            if connection.is_stale(now, self._keepalive_expiry_s):
                _close_now(connection)
                continue
            connection.reused = True
            return connection
        return None

    async def _connect(self, pool: _Endpoint, request: StreamRequest) -> _Connection:
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
        with trio.move_on_after(self._connect_timeout_s) as scope:
            try:
                stream = await trio.open_tcp_stream(pool.host, pool.port)
                if pool.tls:
                    tls = trio.SSLStream(
                        stream,
                        self._tls_context(),
                        server_hostname=pool.host,
                        https_compatible=True,
                    )
                    try:
                        await tls.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(stream)
                        raise
                    stream = tls
            except (OSError, trio.BrokenResourceError) as error:
                # A failed TLS handshake is a BrokenResourceError caused by the ssl error.
                reason = (
                    error.__cause__
                    if isinstance(error, trio.BrokenResourceError)
                    else error
                )
                raise httpx.ConnectError(
                    f"cannot connect to {request.endpoint}: {reason}",
                    request=_http_request(request),
                ) from error
        if stream is None or scope.cancelled_caught:
            raise httpx.ConnectTimeout(
                f"no connection to {request.endpoint} within {self._connect_timeout_s} s",
                request=_http_request(request),
            )
        return _Connection(stream)

    async def _send(
        self, connection: _Connection, data: bytes, request: StreamRequest
    ) -> None:
        with trio.move_on_after(self._connect_timeout_s) as scope:
            try:
                await connection.stream.send_all(data)
            except (OSError, trio.BrokenResourceError) as error:
                raise httpx.WriteError(
                    f"sending to {request.endpoint} failed: {error.__cause__ or error}",
                    request=_http_request(request),
                ) from error
        if scope.cancelled_caught:
            raise httpx.WriteTimeout(
                f"sending to {request.endpoint} took over {self._connect_timeout_s} s",
                request=_http_request(request),
            )

    async def _read_head(
        self, connection: _Connection, request: StreamRequest
    ) -> tuple[ResponseHead, BodyFraming]:
        buffer = b""
        while True:
            try:
                end = find_head_end(buffer)
                while end < 0:
                    data = await _receive(connection, self._watchdog, request)
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
            except httpx.RemoteProtocolError as error:
                error.request = _http_request(request)
                raise
            buffer = buffer[end:]
            connection.leftover = buffer
            if head.status >= 200:
                return head, framing
            if head.status == 101:
                raise httpx.RemoteProtocolError(
                    "unexpected 101 Switching Protocols", request=_http_request(request)
                )
            # 1xx informational: the real response follows.

    def _response_ended(self) -> None:
        self._open_responses -= 1
        if not self._open_responses and self._watchdog is not None:
            self._watchdog.stop()

    def _release(
        self, pool: _Endpoint, connection: _Connection, reusable: bool
    ) -> None:
        pool.slots.release()
        self._response_ended()
        if reusable and not self._closed:
            connection.idle_since = trio.current_time()
            connection.reused = False
            pool.idle.append(connection)
        else:
            _close_now(connection)

    async def aclose(self) -> None:
        self._closed = True
        endpoints, self._endpoints = self._endpoints, {}
        for pool in endpoints.values():
            idle, pool.idle = pool.idle, []
            for connection in idle:
                _close_now(connection)
        await trio.lowlevel.checkpoint()


def _close_now(connection: _Connection) -> None:
    """Close the socket now, without a TLS close_notify (never blocks, never raises)."""
    try:
        connection.socket.close()
    except OSError:
        pass  # nothing more to do with a socket that cannot even be closed


async def _receive(
    connection: _Connection, watchdog: _ReadWatchdog | None, request: StreamRequest
) -> bytes:
    """One read of up to :data:`RECEIVE_BYTES`; ``b""`` at EOF; httpx errors for faults."""
    if watchdog is not None:
        watchdog.start_read(connection)
    try:
        data = await connection.stream.receive_some(RECEIVE_BYTES)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
        if connection.timed_out:
            assert watchdog is not None
            raise httpx.ReadTimeout(
                f"no data from {request.endpoint} for {watchdog.timeout_s} s",
                request=_http_request(request),
            ) from None
        raise httpx.ReadError(
            f"reading from {request.endpoint} failed: {error.__cause__ or error}",
            request=_http_request(request),
        ) from error
    finally:
        if watchdog is not None:
            watchdog.end_read(connection)
    return data if type(data) is bytes else bytes(data)


class TrioResponse:
    """A :class:`~orpheus_trio.transport.ResponseStream` on a pooled connection."""

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
        transport: TrioTransport,
        pool: _Endpoint,
        connection: _Connection,
        request: StreamRequest,
        head: ResponseHead,
        framing: BodyFraming,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._connection: _Connection | None = connection
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
        return f"TrioResponse({self.status}, {self._request!r})"

    async def receive(self) -> bytes:
        """The next piece of body bytes (everything that arrived); ``b""`` at the end."""
        while not self._done:
            connection = self._connection
            if connection is None:
                raise httpx.ReadError(
                    "the response is closed", request=_http_request(self._request)
                )
            data = connection.leftover
            if data:
                connection.leftover = b""
            else:
                try:
                    data = await _receive(
                        connection, self._transport._watchdog, self._request
                    )
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
                except httpx.RemoteProtocolError as error:
                    self._reusable = False
                    error.request = _http_request(self._request)
                    raise
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
        await trio.lowlevel.checkpoint()
