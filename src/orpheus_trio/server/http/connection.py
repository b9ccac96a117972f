"""The HTTP/1.1 server: one task per connection runs the ASGI app, request after request.

This app streams NDJSON one request at a time per connection, so the server
does only that, and does it cheaply (about half the CPU per stream of a
general ASGI server; bench/RESULTS.md):

- requests (heads and bodies) are framed by :mod:`.request` (llhttp, strict);
- the app runs in the connection's task; ``receive`` reads the body from the
  socket, then waits for the caller to leave (``http.disconnect``) while the
  answer streams, keeping what a pipelining caller sends meanwhile;
- the response head goes out with the first body message, and each body
  message is one write, chunk framing included; HEAD answers carry no body;
  a body that disagrees with the app's ``Content-Length`` is logged and the
  connection closed, never sent;
- ``Expect: 100-continue`` is answered when the app first asks for the body,
  i.e. after it checked the key and the declared length.

Limits are the run shell's (:mod:`.run`) and the fairness policy's
(:mod:`.fairness`): each head within its deadline (also the keep-alive idle
time), a stalled write closes the connection.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from .fairness import ConnectionFairness, Slot
from .request import (
    END_OF_MESSAGE,
    MAX_REQUEST_HEAD_BYTES,
    RequestHead,
    RequestParser,
    RequestRefused,
    reason_phrase,
)
from .state import ConnectionState

__all__ = ["HeadWaits", "ServedStream", "serve_connection"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

_log = logging.getLogger("orpheus_trio.server.http")
_READ_BYTES = 64 * 1024
#: What a caller may send ahead (pipelined requests) while an answer streams;
#: past it, reading stops until the answer is done.
_MAX_READ_AHEAD = MAX_REQUEST_HEAD_BYTES + 64 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}
_LOST = (trio.BrokenResourceError, trio.ClosedResourceError)
#: After a refusal, how long and how much of what the caller still sends is
#: read and dropped, so that closing with unread data (a TCP reset) does not
#: destroy our answer before the caller reads it.
_LINGER_S = 2.0
_LINGER_BYTES = 1024 * 1024


class ServedStream(Protocol):
    """What the run shell hands over for each connection (:class:`~.run._WriteLimitedStream`)."""

    state: ConnectionState

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...

    async def send_eof(self) -> None: ...


class HeadWaits:
    """The connections waiting for a request head.

    Their deadlines follow the fairness policy (shorter while the server is
    busy, for the waits already running too); shutdown ends them all at once
    (an idle server stops at once), while answers under way get their grace.
    """

    def __init__(self, fairness: ConnectionFairness) -> None:
        self.fairness = fairness
        self._waiting: dict[trio.CancelScope, Slot] = {}
        self._busy = False
        self.terminated = False

    def add(self, scope: trio.CancelScope, slot: Slot) -> None:
        self._waiting[scope] = slot

    def discard(self, scope: trio.CancelScope) -> None:
        self._waiting.pop(scope, None)

    def refresh(self) -> None:
        """After a connection opened or closed: move every deadline if busy-ness changed."""
        busy = self.fairness.busy
        if busy == self._busy:
            return
        self._busy = busy
        for scope, slot in self._waiting.items():
            scope.deadline = self.fairness.head_deadline(slot)

    def terminate(self) -> None:
        """No more requests: connections waiting for one close now, busy ones after their answer."""
        self.terminated = True
        for scope in self._waiting:
            scope.cancel()


async def serve_connection(
    app: ASGIApp,
    stream: ServedStream,
    *,
    slot: Slot,
    waits: HeadWaits,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
) -> None:
    """Serve requests on ``stream`` until either side ends the connection."""
    await _Connection(app, stream, slot, waits, client, server).run()


@dataclass(eq=False)
class _Connection:
    app: ASGIApp
    stream: ServedStream
    slot: Slot
    waits: HeadWaits
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    parser: RequestParser = field(default_factory=RequestParser)
    #: Read but not yet parsed (what a caller sent ahead while an answer streamed).
    buffer: bytearray = field(default_factory=bytearray)
    peer_gone: bool = False

    async def run(self) -> None:
        while not self.peer_gone and not self.waits.terminated:
            try:
                head = await self._read_head()
            except RequestRefused as refused:
                await self._refuse(refused)
                return
            if head is None:
                return
            exchange = _Exchange(self, head)
            try:
                await self.app(exchange.scope(), exchange.receive, exchange.send)
            except Exception:  # noqa: BLE001 - one request's bug must not end the server
                _log.exception("the app failed on %s %s", head.method, head.path)
                if not exchange.head_sent:
                    await exchange.answer_plainly(500, b"internal error")
                return
            if exchange.body_refused is not None:
                if not exchange.head_sent:  # an app that did not answer it itself
                    await exchange.answer_plainly(400, exchange.body_refused.encode())
                await self._linger()
                return
            if not exchange.reusable():
                return

    async def _read_head(self) -> RequestHead | None:
        """The next request's head, or ``None`` if the connection ends (or is late) first."""
        fairness, slot = self.waits.fairness, self.slot
        if slot.waiting_since is None:
            fairness.awaiting_head(slot)
        # The end of a body-less request the app did not ask to receive.
        self.parser.take_end_of_message()
        event: object | None = None
        with trio.CancelScope(deadline=fairness.head_deadline(slot)) as waiting:
            self.waits.add(waiting, slot)
            if self.waits.terminated:
                waiting.cancel()
            try:
                event = await self._next_event()
            finally:
                self.waits.discard(waiting)
        if isinstance(event, RequestRefused):
            raise event
        if not isinstance(event, RequestHead):
            # The caller left, was late, or the server is stopping; or the last
            # request's body was left unread, so this cannot go on either.
            return None
        fairness.head_received(slot)
        return event

    async def _next_event(self) -> object | None:
        """The parser's next event, reading as needed; ``None`` when the caller is gone."""
        parser = self.parser
        while True:
            event = parser.next_event()
            if event is not None:
                return event
            if self.buffer:
                parser.feed(self.buffer)
                self.buffer.clear()
                continue
            try:
                data = await self.stream.receive_some(_READ_BYTES)
            except _LOST:
                return None
            if not data:
                self.peer_gone = True
                return None  # the caller closed (between requests, or mid-head)
            parser.feed(data)

    async def _refuse(self, refused: RequestRefused) -> None:
        body = refused.reason.encode("ascii", "replace")
        await self.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (refused.status, reason_phrase(refused.status), len(body), body)
        )
        await self._linger()

    async def _linger(self) -> None:
        """Half-close, then drop what the caller still sends for a while (see ``_LINGER_S``)."""
        if self.peer_gone:
            return
        dropped = 0
        with trio.move_on_after(_LINGER_S):
            try:
                await self.stream.send_eof()
                while dropped < _LINGER_BYTES:
                    data = await self.stream.receive_some(_READ_BYTES)
                    if not data:
                        break
                    dropped += len(data)
            except (*_LOST, OSError):
                pass

    async def write(self, data: bytes) -> None:
        if self.peer_gone:
            return
        try:
            await self.stream.send_all(data)
        except _LOST:
            self.peer_gone = True  # the app learns of it from receive(): http.disconnect

    async def read_more(self) -> bool:
        """Read into the buffer; False when the caller is gone."""
        try:
            data = await self.stream.receive_some(_READ_BYTES)
        except _LOST:
            data = b""
        if not data:
            self.peer_gone = True
            return False
        self.buffer += data
        return True


class _Exchange:
    """One request and its answer: the ASGI ``receive`` and ``send`` for it."""

    def __init__(self, connection: _Connection, head: RequestHead) -> None:
        self.connection = connection
        self.head = head
        self.body_done = not head.has_body
        self.body_given = False
        #: Why the body could not be read (chunk framing): the answer is a 400.
        self.body_refused: str | None = None
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        self.chunked_answer = False
        #: HEAD, 1xx, 204 and 304 answers carry no body.
        self.bodiless = False
        #: The app's Content-Length, and what of the body went out so far.
        self.declared_length: int | None = None
        self.body_sent = 0
        self.close_after = not head.keep_alive
        self.complete = False
        self.continue_held = head.expect_continue and head.has_body
        if self.continue_held:
            connection.stream.state.hold_continue(_CONTINUE)

    def scope(self) -> Scope:
        connection, head = self.connection, self.head
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": head.http_version,
            "method": head.method,
            "scheme": "http",
            "path": head.path,
            "raw_path": head.target.partition(b"?")[0],
            "query_string": head.query,
            "root_path": "",
            "headers": head.headers,
            "client": connection.client,
            "server": connection.server,
        }

    # -- receive ------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.continue_held:
            # The app asks for the body only after its checks: now the caller may send it.
            self.continue_held = False
            await self.connection.stream.state.release_continue()
        if self.body_refused is not None:
            return _DISCONNECT
        if not self.body_done:
            return await self._body_piece()
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await self._wait_disconnect()

    async def _body_piece(self) -> dict[str, Any]:
        connection = self.connection
        parser = connection.parser
        while True:
            event = parser.next_body()
            if event is None:
                if connection.buffer:
                    parser.feed(connection.buffer)
                    connection.buffer.clear()
                elif await connection.read_more():
                    parser.feed(connection.buffer)
                    connection.buffer.clear()
                else:
                    return _DISCONNECT
                continue
            if isinstance(event, bytes):
                if not parser.take_end_of_message():
                    return {"type": "http.request", "body": event, "more_body": True}
                self.body_done = self.body_given = True
                return {"type": "http.request", "body": event, "more_body": False}
            if event is END_OF_MESSAGE:
                self.body_done = self.body_given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            assert isinstance(event, RequestRefused)
            # Where the body ends is unknown now: the app answers 400 and we close.
            self.body_refused = f"malformed request body: {event.reason}"
            self.close_after = True
            connection.stream.state.body_refused = self.body_refused
            return _DISCONNECT

    async def _wait_disconnect(self) -> dict[str, Any]:
        """Block until the caller leaves; keep what it sends meanwhile (its next request)."""
        connection = self.connection
        while not connection.peer_gone:
            if len(connection.buffer) > _MAX_READ_AHEAD:
                await trio.sleep_forever()  # the app ends this wait when its answer is done
            await connection.read_more()
        return _DISCONNECT

    # -- send ---------------------------------------------------------------

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.head_sent or self.status:
                raise RuntimeError("http.response.start sent twice")
            self.status = int(message["status"])
            self.response_headers = list(message.get("headers", ()))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.status:
            raise RuntimeError("http.response.body before http.response.start")
        if self.complete:
            return  # after the last body message: nothing more goes on this request
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        head_written = self.head_sent
        out = b"" if head_written else self._encode_head()
        if self.bodiless:
            body = b""
        elif self.declared_length is not None:
            self.body_sent += len(body)
            if self.body_sent > self.declared_length or (
                not more and self.body_sent < self.declared_length
            ):
                await self._length_mismatch(more, head_written)
                return
        if self.chunked_answer:
            if body:
                out += b"%x\r\n%s\r\n" % (len(body), body)
            if not more:
                out += _LAST_CHUNK
        else:
            out += body
        self.complete = not more
        await self.connection.write(out)

    async def _length_mismatch(self, more: bool, head_written: bool) -> None:
        """The app's body disagrees with its Content-Length: our bug, never the caller's reply."""
        head = self.head
        _log.error(
            "the app's answer to %s %s disagrees with its content-length %d: %d bytes%s;"
            " the connection is closed",
            head.method,
            head.path,
            self.declared_length,
            self.body_sent,
            " and more" if more else "",
        )
        self.complete = True
        self.close_after = True
        if head_written:
            self.connection.peer_gone = True  # the caller sees a short body, then the close
        else:
            self.head_sent = self.complete = False
            self.body_sent = 0
            await self.answer_plainly(500, b"internal error")
            self.complete = True

    def _encode_head(self) -> bytes:
        self.head_sent = True
        status = self.status
        self.bodiless = self.head.method == "HEAD" or status < 200 or status in (204, 304)
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))]
        length_given = False
        for name, value in self.response_headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length_given = True
                self.declared_length = int(value)
            elif lowered == b"connection" and b"close" in value.lower():
                self.close_after = True
            elif lowered == b"transfer-encoding":
                continue  # framing is ours to decide
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"date: %s\r\n" % _http_date())
        if not length_given and status >= 200 and status not in (204, 304):
            if self.head.http_version == "1.1":
                # A HEAD answer says what a GET's would; it sends no chunk, not even the last.
                self.chunked_answer = not self.bodiless
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                self.close_after = True  # HTTP/1.0: the body ends when the connection does
        if self.close_after or self.connection.waits.terminated:
            if not any(name.lower() == b"connection" for name, _ in self.response_headers):
                lines.append(b"connection: close\r\n")
            self.close_after = True
        lines.append(b"\r\n")
        return b"".join(lines)

    async def answer_plainly(self, status: int, body: bytes) -> None:
        self.close_after = True
        self.status = status
        self.response_headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        await self.send({"type": "http.response.body", "body": body})

    def reusable(self) -> bool:
        """Whether the connection may carry the next request."""
        return (
            self.complete
            and self.body_done
            and not self.close_after
            and not self.connection.peer_gone
        )


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The ``Date`` header's value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True).encode())
    return _date_cache[1]
