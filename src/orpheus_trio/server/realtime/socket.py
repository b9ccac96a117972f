"""The realtime socket's I/O shell: wsproto over the connection the HTTP server hands over.

The HTTP layer (:mod:`..http.connection`) sees ``GET`` with ``Upgrade:
websocket`` and passes the stream, the request head and the bytes read past
it to :meth:`RealtimeEndpoint.serve`; wsproto answers the handshake and
frames everything after it. The state is :class:`.session.RealtimeSession`'s;
this module only moves bytes and runs the engine:

- one reader task feeds wsproto and the session, and carries out what the
  session asks (a client that never reads blocks it, via the bounded output
  queue: backpressure, not buffering);
- one writer task owns the socket's output: audio, ``done`` and ``error`` go
  through a bounded queue in order, and audio of a cancelled context is
  dropped there, so a ``cancel`` stops its audio within one frame's write;
- one task per open context runs its pieces through the engine in order;
  ``cancel`` cancels it, which closes the engine's generator (its work stops);
- a timer task wakes the session for chunker waits and the idle timeout, and
  sends a ping every ``ping_interval_s`` (no pong by the next one: close 1011).
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

import pybase64
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..engine import (
    CURRENT_REQUEST,
    AbortStream,
    ChunkLines,
    Engine,
    EngineError,
    Piece,
    RequestContext,
)
from ..exchange import HTTPError
from ..slots import Slots
from .session import (
    Action,
    Close,
    Limits,
    RealtimeSession,
    SendJSON,
    Speak,
    Stop,
)

__all__ = ["REALTIME_PATH", "SUBPROTOCOL", "KEY_SUBPROTOCOL_PREFIX", "RealtimeEndpoint"]

REALTIME_PATH = "/v1/tts/realtime"
#: The subprotocol the server speaks (a browser offering a key must offer this too).
SUBPROTOCOL = "orpheus-realtime"
#: A browser cannot set headers on a WebSocket: it offers ``orpheus-key.<key>`` instead.
KEY_SUBPROTOCOL_PREFIX = "orpheus-key."
CLOSE_INTERNAL = 1011
#: Output messages waiting for the socket; past it, producers wait (backpressure).
_OUTPUT_QUEUE = 16
_READ_BYTES = 64 * 1024


class ByteStream(Protocol):
    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...


@dataclass(frozen=True, eq=False)
class RealtimeEndpoint:
    """``GET /v1/tts/realtime`` for ``engine`` (the app registers it with the HTTP server)."""

    engine: Engine
    api_keys: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    #: Each piece's engine deadline (the v1 default ``timeout_s``).
    piece_timeout_s: float = 60.0
    ping_interval_s: float = 20.0
    clock: Callable[[], float] = trio.current_time
    #: The worker's admission: each piece waits for a slot like a v1 request
    #: (``max_concurrency``, ``max_queue``); ``None``: no limit (tests of the socket alone).
    slots: Slots | None = None
    _sockets: set[_Socket] = field(default_factory=set, init=False, repr=False)

    def drain(self) -> None:
        """Shutting down: each socket takes no new context and closes (1001) once none is open."""
        for socket in self._sockets:
            socket.drain()

    async def serve(
        self, stream: ByteStream, target: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """Handshake on ``stream`` (the request head was already read), then run the socket."""
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(_rebuild_head(target, headers))
            request = next(ws.events(), None)
        except RemoteProtocolError as error:
            hint = error.event_hint
            await _refuse(stream, ws, *([hint] if isinstance(hint, RejectConnection) else []))
            return
        if not isinstance(request, Request):
            return
        refusal = self._refusal(headers, request.subprotocols)
        if refusal is not None:
            body = json.dumps({"error": {"code": "unauthorized", "message": refusal}}).encode()
            await _refuse(
                stream,
                ws,
                RejectConnection(
                    status_code=401,
                    headers=[
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                        (b"www-authenticate", b"Bearer"),
                    ],
                    has_body=True,
                ),
                RejectData(data=body),
            )
            return
        chosen = SUBPROTOCOL if SUBPROTOCOL in request.subprotocols else None
        try:
            await stream.send_all(ws.send(AcceptConnection(subprotocol=chosen)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client left during the handshake
        # The client may send frames right behind its handshake; wsproto's server side
        # drops what came with the head, so those bytes are fed only now.
        if rest:
            ws.receive_data(rest)
        socket = _Socket(self, stream, ws)
        self._sockets.add(socket)
        try:
            await socket.run()
        finally:
            self._sockets.discard(socket)

    def _refusal(self, headers: list[tuple[bytes, bytes]], offered: list[str]) -> str | None:
        """Why the key is refused, or ``None`` (no keys configured, or a good one)."""
        if not self.api_keys:
            return None
        presented = ""
        for name, value in headers:
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    presented = token.strip()
            elif name.lower() == b"x-api-key" and not presented:
                presented = value.decode("latin-1").strip()
        for protocol in offered:
            if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
                presented = presented or protocol.removeprefix(KEY_SUBPROTOCOL_PREFIX)
        if not presented:
            return (
                "missing API key (Authorization: Bearer, X-API-Key, "
                "or the orpheus-key.<key> subprotocol)"
            )
        given = presented.encode()
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(given, key.encode())
        return None if matched else "invalid API key"


@dataclass(eq=False)
class _ContextRun:
    serial: int
    pieces: trio.MemorySendChannel[Speak]
    scope: trio.CancelScope
    #: On a gateway: the worker that spoke this context's audio (its later pieces go there).
    upstream: str | None = None


# What the writer takes: an audio piece, a piece finished or failed, a JSON message, a close.
_Output = tuple[Any, ...]


class _Socket:
    def __init__(self, endpoint: RealtimeEndpoint, stream: ByteStream, ws: WSConnection) -> None:
        self.endpoint = endpoint
        self.id = uuid.uuid4().hex[:16]
        self.engine = endpoint.engine
        self.stream = stream
        self.ws = ws
        self.clock = endpoint.clock
        self.session = RealtimeSession(endpoint.engine.validate, endpoint.limits)
        self.output, self.output_rx = trio.open_memory_channel[_Output](_OUTPUT_QUEUE)
        self.contexts: dict[str, _ContextRun] = {}
        self.serials = 0
        self.wake = trio.Event()
        self.awaiting_pong = False
        self.nursery: trio.Nursery | None = None
        self.message = bytearray()
        self.message_is_text = True

    def drain(self) -> None:
        self.session.draining = True
        self.wake.set()  # the timer task polls the session, which closes once no context is open

    async def run(self) -> None:
        self.session.start(self.clock())
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._read)
                nursery.start_soon(self._write)
                nursery.start_soon(self._time)
        finally:
            for run in self.contexts.values():
                run.scope.cancel()

    # -- reading ------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            # What came with the handshake was fed to wsproto already: its events come first.
            try:
                events = list(self.ws.events())
            except RemoteProtocolError:
                events = []
            for event in events:
                if not await self._on_event(event):
                    return
            try:
                data = await self.stream.receive_some(_READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._end()
                return
            self.ws.receive_data(bytes(data))

    async def _on_event(self, event: Event) -> bool:
        """Handle one wsproto event; False: stop reading."""
        if isinstance(event, Message):
            self.message += event.data.encode() if isinstance(event, TextMessage) else event.data
            self.message_is_text = isinstance(event, TextMessage)
            too_big = len(self.message) > self.endpoint.limits.max_message_bytes
            if too_big:
                await self._carry_out(self.session.receive_message(bytes(self.message), self.clock()))
                return False
            if not event.message_finished:
                return True
            data: str | bytes = (
                self.message.decode() if self.message_is_text else bytes(self.message)
            )
            self.message = bytearray()
            await self._carry_out(self.session.receive_message(data, self.clock()))
            self.wake.set()
            return not self.session.closed
        if isinstance(event, Ping):
            await self.output.send(("event", event.response()))
            return True
        if isinstance(event, Pong):
            self.awaiting_pong = False
            return True
        if isinstance(event, CloseConnection):
            self.session.close_all()
            await self.output.send(("event", event.response()))
            await self.output.send(("end",))
            return False
        return True  # wsproto raised on the rest (a protocol error): handled in _read

    def _end(self) -> None:
        """The client is gone (EOF or a protocol error): stop everything."""
        self._stop_contexts(self.session.close_all())
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    # -- actions ------------------------------------------------------------

    async def _carry_out(self, actions: list[Action], *, writer: bool = False) -> None:
        for action in actions:
            if isinstance(action, Speak):
                self._speak(action)
            elif isinstance(action, Stop):
                self._stop(action.context_id)
            elif isinstance(action, SendJSON):
                if writer:
                    await self._send(self.ws.send(TextMessage(json.dumps(action.message))))
                else:
                    await self.output.send(("json", action.message))
            elif isinstance(action, Close):
                if writer:
                    await self._close(action.code, action.reason)
                else:
                    await self.output.send(("close", action.code, action.reason))

    def _speak(self, speak: Speak) -> None:
        run = self.contexts.get(speak.context_id)
        if run is None:
            assert self.nursery is not None
            self.serials += 1
            send, receive = trio.open_memory_channel[Speak](self.endpoint.limits.max_text_chars)
            run = _ContextRun(self.serials, send, trio.CancelScope())
            self.contexts[speak.context_id] = run
            self.nursery.start_soon(self._context, speak.context_id, run, receive)
        run.pieces.send_nowait(speak)

    def _stop(self, context_id: str) -> None:
        run = self.contexts.pop(context_id, None)
        if run is not None:
            run.scope.cancel()

    def _stop_contexts(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Stop):
                self._stop(action.context_id)

    # -- engine -------------------------------------------------------------

    async def _context(
        self, context_id: str, run: _ContextRun, pieces: trio.MemoryReceiveChannel[Speak]
    ) -> None:
        """Speak ``context_id``'s pieces in order until it is done or stopped.

        Each piece runs as a request named ``<socket>.<context>``; on a gateway,
        once a piece had audio the context's later pieces go to the same worker.
        """
        request_id = f"{self.id}.{context_id}"
        with run.scope:
            async with pieces:
                async for speak in pieces:
                    log_fields: dict[str, Any] = {}
                    CURRENT_REQUEST.set(RequestContext(request_id, log_fields, run.upstream))
                    failure = await self._speak_piece(context_id, run.serial, speak)
                    run.upstream = run.upstream or log_fields.get("upstream")
                    if failure is not None:
                        await self.output.send(("failed", context_id, run.serial, *failure))
                        break
                    await self.output.send(("piece_done", context_id, run.serial))
        if self.contexts.get(context_id) is run:
            del self.contexts[context_id]

    async def _speak_piece(
        self, context_id: str, serial: int, speak: Speak
    ) -> tuple[str, str] | None:
        """Run one piece through the engine (in its admission slot); ``(code, message)`` if it failed."""
        slots = self.endpoint.slots
        if slots is None:
            return await self._synthesize(context_id, serial, speak)
        try:
            ticket = slots.admit()
        except HTTPError as refused:
            return refused.code, refused.message
        try:
            with trio.move_on_after(self.endpoint.piece_timeout_s) as waiting:
                await slots.wait_turn(ticket)
            if waiting.cancelled_caught:
                return "deadline_exceeded", "no synthesis slot within the piece's deadline"
            return await self._synthesize(context_id, serial, speak)
        finally:
            slots.release(ticket)

    async def _synthesize(
        self, context_id: str, serial: int, speak: Speak
    ) -> tuple[str, str] | None:
        with trio.move_on_after(self.endpoint.piece_timeout_s) as deadline:
            try:
                generator: AsyncGenerator[Piece, None] = self.engine.synthesize(
                    speak.text, speak.voice, dict(speak.params)
                )
                async with aclosing(generator):
                    async for piece in generator:
                        if isinstance(piece, ChunkLines):  # a gateway's worker's checked lines
                            for pcm in _chunk_audio(piece):
                                await self.output.send(("audio", context_id, serial, pcm))
                        elif isinstance(piece, bytes):
                            if len(piece) % 2:
                                return "engine_error", "the engine sent an odd number of bytes"
                            if piece:
                                await self.output.send(("audio", context_id, serial, piece))
            except EngineError as error:
                return _engine_code(error.code), error.message
            except AbortStream:
                return "engine_error", "the engine stopped mid-stream"
        if deadline.cancelled_caught:
            return "deadline_exceeded", f"a piece took over {self.endpoint.piece_timeout_s:g} s"
        return None

    # -- writing ------------------------------------------------------------

    async def _write(self) -> None:
        async with self.output_rx:
            async for item in self.output_rx:
                kind = item[0]
                now = self.clock()
                if kind == "audio":
                    _, context_id, serial, pcm = item
                    if self._current(context_id, serial):
                        frame = self.session.audio(context_id, pcm)
                        if frame is not None:
                            await self._send(self.ws.send(BytesMessage(frame)))
                elif kind == "piece_done":
                    if self._current(item[1], item[2]):
                        await self._carry_out(self.session.piece_done(item[1], now), writer=True)
                elif kind == "failed":
                    _, context_id, serial, code, message = item
                    if self._current(context_id, serial):
                        actions = self.session.piece_failed(context_id, code, message, now)
                        await self._carry_out(actions, writer=True)
                elif kind == "json":
                    await self._send(self.ws.send(TextMessage(json.dumps(item[1]))))
                elif kind == "event":
                    await self._send_event(item[1])
                elif kind == "close":
                    await self._close(item[1], item[2])
                else:  # "end": the client closed and was answered
                    self._end()
                    return
                self.wake.set()

    def _current(self, context_id: str, serial: int) -> bool:
        """Whether output of this context run still goes out (not cancelled, not replaced)."""
        run = self.contexts.get(context_id)
        return run is not None and run.serial == serial

    async def _send_event(self, event: Event) -> None:
        """A pong or the close reply: nothing when the connection is already closed (EOF)."""
        try:
            data = self.ws.send(event)
        except LocalProtocolError:
            return
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end()

    async def _close(self, code: int, reason: str) -> None:
        self._stop_contexts(self.session.close_all())
        try:
            data = self.ws.send(CloseConnection(code=code, reason=reason))
        except LocalProtocolError:
            data = b""
        if data:
            await self._send(data)
        self._end()

    # -- time ---------------------------------------------------------------

    async def _time(self) -> None:
        next_ping = self.clock() + self.endpoint.ping_interval_s
        while True:
            deadline = self.session.deadline
            wake_at = next_ping if deadline is None else min(deadline, next_ping)
            self.wake = trio.Event()
            with trio.move_on_at(wake_at):
                await self.wake.wait()
            now = self.clock()
            if now >= next_ping:
                if self.awaiting_pong:
                    await self.output.send(("close", CLOSE_INTERNAL, "no pong"))
                    return
                self.awaiting_pong = True
                next_ping = now + self.endpoint.ping_interval_s
                await self.output.send(("event", Ping(payload=b"orpheus")))
            await self._carry_out(self.session.poll(now))


def _chunk_audio(lines: ChunkLines) -> list[bytes]:
    """The PCM of v1 ``chunk`` lines a gateway relays (checked by its frame decoder already)."""
    return [pybase64.b64decode(json.loads(line)["audio"]) for line in lines.data.splitlines()]


def _engine_code(code: str) -> str:
    """An engine's code as sent to the client: a v1 code, else ``engine_error``."""
    from ..error_codes import ERROR_CODES

    return code if code in ERROR_CODES else "engine_error"


def _rebuild_head(target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request head again, for wsproto's handshake (the HTTP layer already parsed it)."""
    lines = [b"GET %s HTTP/1.1" % target]
    lines += [b"%s: %s" % (name, value) for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _refuse(stream: ByteStream, ws: WSConnection, *events: Event) -> None:
    """Answer the handshake with a refusal (400, 401); the caller may already be gone."""
    data = b""
    try:
        for event in events:
            data += ws.send(event)
    except LocalProtocolError:
        data = b""
    if not data:
        data = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
