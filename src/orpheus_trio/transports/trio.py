"""HTTP/1.1 on Trio streams: the fast :class:`~orpheus_trio.transports.base.Transport` under Trio.

The pool and the HTTP framing are :mod:`~orpheus_trio._http.pool`'s; this
module brings Trio's sockets (``trio.open_tcp_stream``, ``trio.SSLStream``)
and a read timeout that costs no cancel scope per read (:class:`_ReadWatchdog`).
"""

from __future__ import annotations

import ssl

import httpx
import trio

from .._http.pool import (
    RECEIVE_BYTES,
    Connection,
    InsecureTransportWarning,
    PooledTransport,
    http_request,
    warn_verification_off,
)
from .base import StreamRequest

__all__ = [
    "InsecureTransportWarning",
    "TrioTransport",
    "warn_verification_off",
]

class _TrioConnection(Connection):
    """A Trio socket stream (plain or TLS)."""

    __slots__ = ("socket", "stream", "timed_out", "watchdog")

    def __init__(
        self,
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        watchdog: _ReadWatchdog | None,
    ) -> None:
        super().__init__()
        self.stream = stream
        tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        self.socket = tcp.socket
        self.watchdog = watchdog
        self.timed_out = False  # the read watchdog closed it

    async def send_all(self, data: bytes, request: StreamRequest) -> None:
        try:
            await self.stream.send_all(data)
        except (OSError, trio.BrokenResourceError) as error:
            raise httpx.WriteError(
                f"sending to {request.endpoint} failed: {error.__cause__ or error}",
                request=http_request(request),
            ) from error

    async def receive(self, request: StreamRequest) -> bytes:
        watchdog = self.watchdog
        if watchdog is not None:
            watchdog.start_read(self)
        try:
            data = await self.stream.receive_some(RECEIVE_BYTES)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            if self.timed_out:
                assert watchdog is not None
                raise httpx.ReadTimeout(
                    f"no data from {request.endpoint} for {watchdog.timeout_s} s",
                    request=http_request(request),
                ) from None
            raise httpx.ReadError(
                f"reading from {request.endpoint} failed: {error.__cause__ or error}",
                request=http_request(request),
            ) from error
        finally:
            if watchdog is not None:
                watchdog.end_read(self)
        return data if type(data) is bytes else bytes(data)

    def close_now(self) -> None:
        try:
            self.socket.close()
        except OSError:
            pass  # nothing more to do with a socket that cannot even be closed

    def peer_spoke(self) -> bool:
        return self.socket.is_readable()


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
        self._reads: dict[_TrioConnection, float] = {}  # in start order
        self._scope: trio.CancelScope | None = None

    def start_read(self, connection: _TrioConnection) -> None:
        self._reads[connection] = trio.current_time()
        if self._scope is None:
            self._scope = trio.CancelScope()
            trio.lowlevel.spawn_system_task(
                self._run, self._scope, name="orpheus-trio read watchdog"
            )

    def end_read(self, connection: _TrioConnection) -> None:
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
                    connection.close_now()
                oldest = next(iter(self._reads.values()), now)
                await trio.sleep_until(oldest + self.timeout_s)


class TrioTransport(PooledTransport):
    """HTTP/1.1 over ``trio.open_tcp_stream`` (and ``trio.SSLStream``), pooled per endpoint."""

    _watchdog: _ReadWatchdog | None = None  # made with the first connection

    async def _open_connection(
        self, host: str, port: int, tls: ssl.SSLContext | None
    ) -> Connection:
        if self._watchdog is None and self._read_timeout_s is not None:
            self._watchdog = _ReadWatchdog(self._read_timeout_s)
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
        stream = await trio.open_tcp_stream(host, port)
        if tls is not None:
            secure = trio.SSLStream(
                stream, tls, server_hostname=host, https_compatible=True
            )
            try:
                await secure.do_handshake()
            except trio.BrokenResourceError as error:
                await trio.aclose_forcefully(stream)
                # A failed handshake is a BrokenResourceError caused by the ssl error.
                cause = error.__cause__
                raise (
                    cause if isinstance(cause, OSError) else OSError(str(error))
                ) from error
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            stream = secure
        return _TrioConnection(stream, self._watchdog)

    def _responses_done(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
