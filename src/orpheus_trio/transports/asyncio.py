"""HTTP/1.1 on asyncio protocols: the fast :class:`~orpheus_trio.transports.base.Transport` under asyncio.

The pool and the HTTP framing are :mod:`~orpheus_trio._http.pool`'s; this
module brings asyncio's sockets. A :class:`asyncio.Protocol` (the cheapest way
asyncio delivers bytes: a callback per arrival, no reader task) collects what
arrived, and a read takes all of it at once. The read timeout is one loop timer
per transport, re-armed for the oldest read in flight, rather than a timer or a
cancel scope per read (see :class:`~orpheus_trio.transports.trio.TrioTransport`'s
watchdog, the same idea).
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx

from .._http.pool import (
    Connection,
    PooledTransport,
    http_request,
)
from .base import StreamRequest

__all__ = ["AsyncioTransport"]

#: Bytes buffered from the socket before asyncio is told to stop reading it.
_HIGH_WATER = 1024 * 1024
#: Seconds a TLS handshake or a TLS close may take.
_TLS_TIMEOUT_S = 30.0


class _Closed(ConnectionError):
    """We closed the connection (a read timeout, or the pool gave it up)."""


class _Protocol(asyncio.Protocol):
    """Collects arrivals for :class:`_AsyncioConnection`; wakes its one reader."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pieces: list[bytes] = []
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.reader: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        writable = self.writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable = self.writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _wake(self) -> None:
        reader = self.reader
        if reader is not None and not reader.done():
            reader.set_result(None)


class _AsyncioConnection(Connection):
    """An asyncio transport (plain or TLS) and its protocol."""

    __slots__ = ("protocol", "timed_out", "timer", "transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _Protocol,
        timer: _ReadTimer | None,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.protocol = protocol
        self.timer = timer
        self.timed_out = False

    async def send_all(self, data: bytes, request: StreamRequest) -> None:
        protocol = self.protocol
        if protocol.error is not None or self.transport.is_closing():
            raise httpx.WriteError(
                f"sending to {request.endpoint} failed: {protocol.error or 'connection closed'}",
                request=http_request(request),
            )
        self.transport.write(data)
        writable = protocol.writable
        if writable is not None and not writable.done():
            await writable
            if protocol.error is not None:
                raise httpx.WriteError(
                    f"sending to {request.endpoint} failed: {protocol.error}",
                    request=http_request(request),
                )

    async def receive(self, request: StreamRequest) -> bytes:
        protocol = self.protocol
        if not protocol.pieces and protocol.error is None and not protocol.eof:
            loop = asyncio.get_running_loop()
            reader = protocol.reader = loop.create_future()
            timer = self.timer
            if timer is not None:
                timer.start_read(self, loop)
            try:
                await reader
            finally:
                protocol.reader = None
                if timer is not None:
                    timer.end_read(self)
        pieces = protocol.pieces
        if pieces:
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            protocol.buffered = 0
            if protocol.paused:
                protocol.paused = False
                self.transport.resume_reading()
            return data
        if self.timed_out:
            assert self.timer is not None
            raise httpx.ReadTimeout(
                f"no data from {request.endpoint} for {self.timer.timeout_s} s",
                request=http_request(request),
            )
        if protocol.error is not None:
            raise httpx.ReadError(
                f"reading from {request.endpoint} failed: {protocol.error}",
                request=http_request(request),
            ) from protocol.error
        return b""

    def close_now(self) -> None:
        protocol = self.protocol
        if protocol.error is None:
            protocol.error = _Closed("the connection was closed")
        protocol.eof = True
        protocol._wake()
        try:
            self.transport.abort()
        except RuntimeError:  # its loop is closed (the client moved to a new loop)
            # asyncio only hands out a TransportSocket wrapper (no close()); the socket
            # it wraps is closed here, else the fd would stay open until collected.
            wrapper = self.transport.get_extra_info("socket")
            sock = getattr(wrapper, "_sock", None)
            if isinstance(sock, socket.socket):
                sock.close()

    def peer_spoke(self) -> bool:
        protocol = self.protocol
        return bool(protocol.pieces) or protocol.eof or protocol.error is not None


class _ReadTimer:
    """The read timeout of every read in flight, enforced by one loop timer.

    Each read notes when it started; one timer fires at the oldest read's
    deadline, closes every connection whose read ran out (which wakes its
    reader) and re-arms itself for the next oldest.
    """

    __slots__ = ("_handle", "_reads", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._reads: dict[_AsyncioConnection, float] = {}  # in start order
        self._handle: asyncio.TimerHandle | None = None

    def start_read(
        self, connection: _AsyncioConnection, loop: asyncio.AbstractEventLoop
    ) -> None:
        now = loop.time()
        self._reads[connection] = now
        if self._handle is None:
            self._handle = loop.call_at(now + self.timeout_s, self._fire, loop)

    def end_read(self, connection: _AsyncioConnection) -> None:
        self._reads.pop(connection, None)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        now = loop.time()
        expired = [c for c, t in self._reads.items() if now - t >= self.timeout_s]
        for connection in expired:
            del self._reads[connection]
            connection.timed_out = True
            connection.close_now()
        if self._reads:
            oldest = next(iter(self._reads.values()))
            self._handle = loop.call_at(oldest + self.timeout_s, self._fire, loop)


class AsyncioTransport(PooledTransport):
    """HTTP/1.1 over ``loop.create_connection`` (TLS by asyncio's ``ssl=``), pooled per endpoint."""

    _timer: _ReadTimer | None = None  # made with the first connection

    async def _open_connection(
        self, host: str, port: int, tls: ssl.SSLContext | None
    ) -> Connection:
        if self._timer is None and self._read_timeout_s is not None:
            self._timer = _ReadTimer(self._read_timeout_s)
        loop = asyncio.get_running_loop()
        if tls is None:
            transport, protocol = await loop.create_connection(_Protocol, host, port)
        else:
            transport, protocol = await loop.create_connection(
                _Protocol,
                host,
                port,
                ssl=tls,
                server_hostname=host,
                ssl_handshake_timeout=_TLS_TIMEOUT_S,
                ssl_shutdown_timeout=_TLS_TIMEOUT_S,
            )
        return _AsyncioConnection(transport, protocol, self._timer)

    def _responses_done(self) -> None:
        if self._timer is not None:
            self._timer.stop()
