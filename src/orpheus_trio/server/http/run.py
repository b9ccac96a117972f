"""Run the app on Trio: programmatic start, port 0, connection limits, graceful draining.

``base_url = await nursery.start(serve, engine, config)`` binds (port 0 picks a
free port), reports ``"http://host:port"`` and serves until cancelled. Set the
``drain`` event to shut down gracefully: new synthesis requests get 503
``draining``, in-flight streams get ``config.drain_grace_s`` to finish (those
still running then end with an in-band ``cancelled`` error frame), then
``serve`` returns; an idle server returns at once. The caller owns the engine
and closes it.

This is the thin I/O shell around :mod:`.connection` (one task per
connection) and :mod:`.fairness` (who may hold a connection, and for how
long its head may take). Every connection passes through
:class:`_CappedListener` and :class:`_WriteLimitedStream`:

- at most ``config.max_connections`` are open at once; past that, accepting
  waits (new connections queue in the kernel's backlog) until one closes;
- a connection past its client address's caps is closed as soon as accepted;
- a write that makes no headway for ``config.write_stall_timeout_s`` closes
  the connection (a caller that stopped reading would otherwise hold its
  admission slot forever); a closed connection is a disconnect to the app,
  which releases everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from ..._util.groups import single_exception
from ..app import OrpheusApp, create_app
from ..config import ServerConfig
from ..engine import Engine
from .connection import HeadWaits, serve_connection
from .fairness import ConnectionFairness, FairnessLimits, Slot
from .state import CURRENT_CONNECTION, ConnectionState

__all__ = ["serve", "serve_app", "serve_asgi"]

#: After the drain grace, time for cancelled streams to send their last frame
#: and for busy connections to close; an idle server does not wait it.
_LAST_GRACE_S = 1.0

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


async def serve(
    engine: Engine,
    config: ServerConfig,
    *,
    drain: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``engine`` until cancelled, or until ``drain`` is set and draining ends."""
    await serve_app(
        create_app(engine, config), config, drain=drain, task_status=task_status
    )


async def serve_app(
    app: OrpheusApp,
    config: ServerConfig,
    *,
    drain: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Like :func:`serve` for an app made by :func:`~.app.create_app` (tests inspect it)."""
    await serve_asgi(app, config, drain=drain, task_status=task_status, drained=app)


async def serve_asgi(
    app: ASGIApp,
    config: ServerConfig,
    *,
    drain: trio.Event | None = None,
    drained: OrpheusApp | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve any ASGI ``app``; ``drained`` (the app, when it is ours) is drained on ``drain``."""
    with single_exception():
        # A failed bind (OSError: a port in use) raises before anything is served.
        sockets = await trio.open_tcp_listeners(config.port, host=config.host)
        connections = _Connections(config)
        listeners = [_CappedListener(socket, connections) for socket in sockets]
        waits = connections.waits

        async def handle(stream: _WriteLimitedStream) -> None:
            CURRENT_CONNECTION.set(stream.state)
            try:
                await serve_connection(
                    app,
                    stream,
                    slot=stream.slot,
                    waits=waits,
                    client=_address(stream.socket.getpeername()),
                    server=_address(stream.socket.getsockname()),
                )
            finally:
                await stream.aclose()

        async with trio.open_nursery() as handlers:
            try:
                async with trio.open_nursery() as acceptors:
                    acceptors.start_soon(
                        partial(
                            trio.serve_listeners, handle, listeners, handler_nursery=handlers
                        )
                    )
                    task_status.started(_base_url(sockets[0]))
                    if drain is None:
                        await trio.sleep_forever()
                    else:
                        await drain.wait()
                    if drained is not None:
                        drained.start_draining()
                        with trio.move_on_after(config.drain_grace_s):
                            await drained.wait_idle()
                        # Past the grace, streams still running end with an in-band ``cancelled``.
                        drained.cancel_streams()
                        with trio.move_on_after(_LAST_GRACE_S):
                            await drained.wait_idle()
                    acceptors.cancel_scope.cancel()
                _close_listeners(sockets)
                # Idle keep-alive connections close now; busy ones get a last grace.
                waits.terminate()
                with trio.move_on_after(_LAST_GRACE_S):
                    await connections.wait_all_closed()
            finally:
                _close_listeners(sockets)
                connections.close_all()
                handlers.cancel_scope.cancel()


def _address(sockaddr: Any) -> tuple[str, int] | None:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return None


def _close_listeners(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()


def _base_url(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Connections:
    """The open connections: their number capped, their fairness kept, each closable."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.slots = trio.Semaphore(config.max_connections)
        self.fairness = ConnectionFairness(FairnessLimits.of(config), trio.current_time)
        self.waits = HeadWaits(self.fairness)
        self.open: set[_WriteLimitedStream] = set()
        self._all_closed = trio.Event()
        self._all_closed.set()

    def opened(self, stream: _WriteLimitedStream) -> None:
        self.open.add(stream)
        self._all_closed = trio.Event()

    def closed(self, stream: _WriteLimitedStream) -> None:
        self.open.discard(stream)
        self.fairness.release(stream.slot)
        self.waits.refresh()
        self.slots.release()
        if not self.open:
            self._all_closed.set()

    async def wait_all_closed(self) -> None:
        await self._all_closed.wait()

    def close_all(self) -> None:
        """Close every socket now: wakes any task blocked on one."""
        for stream in list(self.open):
            stream.close_now()


class _CappedListener(trio.abc.Listener["_WriteLimitedStream"]):
    """Accepts only while fewer than ``max_connections`` are open, and only what fairness admits."""

    def __init__(
        self, listener: trio.SocketListener, connections: _Connections
    ) -> None:
        self._listener = listener
        self._connections = connections

    async def accept(self) -> _WriteLimitedStream:
        connections = self._connections
        while True:
            await connections.slots.acquire()
            try:
                stream = await self._listener.accept()
            except BaseException:
                connections.slots.release()
                raise
            peer = _address(stream.socket.getpeername())
            slot = connections.fairness.admit(peer[0] if peer else None)
            if slot is not None:
                connections.waits.refresh()
                return _WriteLimitedStream(stream, slot, connections)
            # Past its address's caps: closed now, its place kept for other clients.
            connections.slots.release()
            stream.socket.close()

    async def aclose(self) -> None:
        await self._listener.aclose()


class _WriteLimitedStream(trio.abc.HalfCloseableStream):
    """A connection whose writes give up after ``write_stall_timeout_s`` without headway.

    Closing it (at the end of its task, after a stalled write or at shutdown)
    frees its place under ``max_connections`` and its client's caps.
    """

    def __init__(
        self, stream: trio.SocketStream, slot: Slot, connections: _Connections
    ) -> None:
        self._stream = stream
        self.slot = slot
        self._connections = connections
        self._stall_s = connections.config.write_stall_timeout_s
        self._closed = False
        self.state = ConnectionState(self._send_now)
        connections.opened(self)

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._send_now(data)
        self.state.bytes_sent += len(data)

    async def _send_now(self, data: bytes | bytearray | memoryview) -> None:
        with trio.move_on_after(self._stall_s) as write:
            await self._stream.send_all(data)
        if write.cancelled_caught:
            self.close_now()
            raise trio.BrokenResourceError(
                f"the peer read nothing for {self._stall_s:g} s"
            )

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    def close_now(self) -> None:
        self.state.closed = True
        if not self._closed:
            self._closed = True
            self._connections.closed(self)
        # Closing the socket wakes a task blocked writing to it (ClosedResourceError).
        self._stream.socket.close()

    async def aclose(self) -> None:
        self.close_now()
        await self._stream.aclose()
