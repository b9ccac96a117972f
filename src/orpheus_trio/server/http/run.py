"""Run the app on Trio with Hypercorn: programmatic start, port 0, graceful draining.

``base_url = await nursery.start(serve, engine, config)`` binds (port 0 picks a
free port), reports ``"http://host:port"`` and serves until cancelled. Set the
``drain`` event to shut down gracefully: new synthesis requests get 503
``draining``, in-flight streams get ``config.drain_grace_s`` to finish (those
still running then end with an in-band ``cancelled`` error frame), then
``serve`` returns. The caller owns the engine and closes it.

We run Hypercorn's per-connection ``TCPServer`` on listeners of our own (its
public ``serve`` builds its listeners itself), so every connection passes
through :class:`_CappedListener` and :class:`_WriteLimitedStream`:

- at most ``config.max_connections`` are open at once; past that, accepting
  waits (new connections queue in the kernel's backlog) until one closes;
- a write that makes no headway for ``config.write_stall_timeout_s`` closes
  the connection. Hypercorn shields writes from cancellation, so without this
  a caller that stops reading would hold its admission slot forever; a closed
  connection is a disconnect to the app, which releases everything;
- request framing is strict and ``100 Continue`` waits for the app's checks
  (:mod:`.guard`).

That uses Hypercorn internals, hence the ``<0.19`` pin in pyproject.toml.
"""

from __future__ import annotations

import logging
from functools import partial
from collections.abc import Awaitable, Callable
from typing import Any, cast

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from ..._util.groups import single_exception
from ..app import OrpheusApp, create_app
from ..config import ServerConfig
from ..engine import Engine
from .connection import IdleConnections, UpgradeHandler, serve_connection
from .guard import (
    CURRENT_CONNECTION,
    ConnectionState,
    StrictH11Connection,
    continue_on_receive,
)

__all__ = ["serve", "serve_app"]

#: Time for cancelled streams to send their last frame, then for connections to close.
_HYPERCORN_GRACE_S = 1.0


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
    with single_exception():
        # A failed bind (OSError: a port in use) raises before anything is served.
        sockets = await trio.open_tcp_listeners(config.port, host=config.host)
        connections = _Connections(config)
        listeners = [_CappedListener(socket, connections) for socket in sockets]
        guarded_app = continue_on_receive(cast(Any, app))
        if config.http_server == "hypercorn":
            handle, terminate = _hypercorn_handler(guarded_app, config)
        else:
            handle, terminate = _builtin_handler(guarded_app, config, app)

        async with trio.open_nursery() as handlers:
            try:
                async with trio.open_nursery() as acceptors:
                    acceptors.start_soon(
                        partial(
                            trio.serve_listeners,
                            handle,
                            listeners,
                            handler_nursery=handlers,
                        )
                    )
                    task_status.started(_base_url(sockets[0]))
                    if drain is None:
                        await trio.sleep_forever()
                    else:
                        await drain.wait()
                    app.start_draining()
                    with trio.move_on_after(config.drain_grace_s):
                        await app.wait_idle()
                    # Past the grace, streams still running end with an in-band ``cancelled``.
                    app.cancel_streams()
                    with trio.move_on_after(_HYPERCORN_GRACE_S):
                        await app.wait_idle()
                    acceptors.cancel_scope.cancel()
                _close_listeners(sockets)
                # Idle keep-alive connections close now; the rest get a last grace.
                await terminate()
                with trio.move_on_after(_HYPERCORN_GRACE_S):
                    await connections.wait_all_closed()
            finally:
                # Drained, cancelled or failed: close what is left now, as
                # cancelling alone cannot end Hypercorn's shielded writes.
                _close_listeners(sockets)
                connections.close_all()
                handlers.cancel_scope.cancel()


Handler = Callable[["_WriteLimitedStream"], Awaitable[None]]


def _builtin_handler(
    app: Any, config: ServerConfig, upgrade: UpgradeHandler | None = None
) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    """Connections served by :mod:`.connection`; ``terminate`` closes the idle ones."""
    idle = IdleConnections()

    async def handle(stream: _WriteLimitedStream) -> None:
        CURRENT_CONNECTION.set(stream.state)
        try:
            await serve_connection(
                app,
                stream,
                read_timeout_s=config.read_timeout_s,
                idle=idle,
                client=_address(stream.socket.getpeername()),
                server=_address(stream.socket.getsockname()),
                upgrade=upgrade,
            )
        finally:
            await stream.aclose()

    async def terminate() -> None:
        idle.terminate()

    return handle, terminate


def _hypercorn_handler(
    app: Any, config: ServerConfig
) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    """Connections served by Hypercorn's per-connection server (internals: see the docstring)."""
    hypercorn_config = _hypercorn_config(config)
    # No lifespan protocol: the app has no startup or shutdown work.
    context = WorkerContext(None)
    connection = partial(
        _TCPServer,
        wrap_app(app, hypercorn_config.wsgi_max_body_size, "asgi"),
        hypercorn_config,
        context,
        {},
    )

    async def handle(stream: _WriteLimitedStream) -> None:
        # The request tasks Hypercorn starts from this task inherit it.
        CURRENT_CONNECTION.set(stream.state)
        try:
            # Hypercorn types its stream as SSL; it probes for TLS and takes plain too.
            await connection(cast(Any, stream))
        finally:
            await stream.aclose()

    async def terminate() -> None:
        await context.terminated.set()

    return handle, terminate


def _address(sockaddr: Any) -> tuple[str, int] | None:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return None


class _TCPServer(TCPServer):
    """Hypercorn's connection handler with :class:`StrictH11Connection` framing."""

    async def _read_data(self) -> None:
        protocol = getattr(self.protocol, "protocol", None)
        connection = getattr(protocol, "connection", None)
        if type(connection) is h11.Connection:  # HTTP/1.1 (not h2, not TLS ALPN h2)
            connection.__class__ = StrictH11Connection
        await super()._read_data()


def _close_listeners(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()


def _hypercorn_config(config: ServerConfig) -> HypercornConfig:
    hc = HypercornConfig()
    # Headers must arrive within read_timeout_s: the idle timer runs until they do.
    hc.keep_alive_timeout = config.read_timeout_s
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.accesslog = None
    return hc


def _base_url(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Connections:
    """The open connections: their number capped, each closable at shutdown."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.slots = trio.Semaphore(config.max_connections)
        self.open: set[_WriteLimitedStream] = set()
        self._all_closed = trio.Event()
        self._all_closed.set()

    def opened(self, stream: _WriteLimitedStream) -> None:
        self.open.add(stream)
        self._all_closed = trio.Event()

    def closed(self, stream: _WriteLimitedStream) -> None:
        self.open.discard(stream)
        self.slots.release()
        if not self.open:
            self._all_closed.set()

    async def wait_all_closed(self) -> None:
        await self._all_closed.wait()

    def close_all(self) -> None:
        """Close every socket now: wakes writes Hypercorn shields from cancellation."""
        for stream in list(self.open):
            stream.close_now()


class _CappedListener(trio.abc.Listener["_WriteLimitedStream"]):
    """Accepts only while fewer than ``max_connections`` are open."""

    def __init__(
        self, listener: trio.SocketListener, connections: _Connections
    ) -> None:
        self._listener = listener
        self._connections = connections

    async def accept(self) -> _WriteLimitedStream:
        await self._connections.slots.acquire()
        try:
            stream = await self._listener.accept()
        except BaseException:
            self._connections.slots.release()
            raise
        return _WriteLimitedStream(stream, self._connections)

    async def aclose(self) -> None:
        await self._listener.aclose()


class _WriteLimitedStream(trio.abc.HalfCloseableStream):
    """A connection whose writes give up after ``write_stall_timeout_s`` without headway.

    Closing it (by Hypercorn, at the peer's EOF, after a stalled write or at
    shutdown) frees its place under ``max_connections``.
    """

    def __init__(self, stream: trio.SocketStream, connections: _Connections) -> None:
        self._stream = stream
        self._connections = connections
        self._stall_s = connections.config.write_stall_timeout_s
        self._closed = False
        self.state = ConnectionState(self._send_now)
        connections.opened(self)

    @property
    def socket(self) -> trio.socket.SocketType:
        """Hypercorn reads the addresses from it."""
        return self._stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.state.hold_if_continue(data):
            return  # sent when the app asks for the body (http_guard)
        await self._send_now(data)
        self.state.bytes_sent += len(data)

    async def _send_now(self, data: bytes | bytearray | memoryview) -> None:
        # A deadline of its own still fires inside Hypercorn's shielded scope.
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
        data = await self._stream.receive_some(max_bytes)
        if not data:
            # Hypercorn treats EOF as the end of the connection but keeps its
            # task (and so the socket) until its keep-alive timer ends: free both now.
            self.close_now()
        return data

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
