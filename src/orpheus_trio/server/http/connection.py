"""The built-in HTTP/1.1 server: one task per connection runs the ASGI app, request after request.

Hypercorn serves any ASGI app over HTTP/1.1 and HTTP/2, and pays for that on
every event: an h11 state machine, a task and queues per request, a shielded
send per body message. This app streams NDJSON one request at a time per
connection, so the built-in server does only that:

- the head is parsed by :mod:`.request` (strict framing, 431, 505, ...);
- the app runs in the connection's task; ``receive`` reads the body from the
  socket, then waits for the caller to leave (``http.disconnect``) while the
  answer streams, keeping what a pipelining caller sends meanwhile;
- the response head goes out with the first body message, and each body
  message is one write, chunk framing included;
- ``Expect: 100-continue`` is answered when the app first asks for the body,
  i.e. after it checked the key and the declared length (:mod:`.guard`).

Limits are the run shell's (:mod:`.run`): the head within ``read_timeout_s``
(also the keep-alive idle time), a stalled write closes the connection, and
at most ``max_connections`` at once.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from ..._http.h1 import ChunkedDecoder, H1ProtocolError
from .request import (
    MAX_REQUEST_HEAD_BYTES,
    RequestHead,
    RequestRefused,
    parse_request_head,
    reason_phrase,
)
from .state import ConnectionState

__all__ = ["IdleConnections", "ServedStream", "serve_connection"]

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


class ServedStream(Protocol):
    """What the run shell hands over for each connection (:class:`~.run._WriteLimitedStream`)."""

    state: ConnectionState

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...


class IdleConnections:
    """The connections waiting for their next request: shutdown closes them at once."""

    def __init__(self) -> None:
        self._waiting: set[trio.CancelScope] = set()
        self.terminated = False

    def terminate(self) -> None:
        """No more requests: idle connections close now, busy ones after their answer."""
        self.terminated = True
        for scope in self._waiting:
            scope.cancel()


async def serve_connection(
    app: ASGIApp,
    stream: ServedStream,
    *,
    read_timeout_s: float,
    idle: IdleConnections,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
) -> None:
    """Serve requests on ``stream`` until either side ends the connection."""
    await _Connection(app, stream, read_timeout_s, idle, client, server).run()


@dataclass(eq=False)
class _Connection:
    app: ASGIApp
    stream: ServedStream
    read_timeout_s: float
    idle: IdleConnections
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    buffer: bytearray = field(default_factory=bytearray)
    peer_gone: bool = False

    async def run(self) -> None:
        while not self.peer_gone and not self.idle.terminated:
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
            if not exchange.reusable():
                return

    async def _read_head(self) -> RequestHead | None:
        """The next request's head, or ``None`` if the connection ends first."""
        buffer = self.buffer
        with trio.move_on_after(self.read_timeout_s) as waiting:
            # Only a connection with nothing of the next request yet is idle.
            idle = not buffer.strip(b"\r\n")
            if idle:
                self.idle._waiting.add(waiting)
            try:
                while True:
                    while buffer[:2] == b"\r\n":  # blank lines between requests (RFC 9112 §2.2)
                        del buffer[:2]
                    end = buffer.find(b"\r\n\r\n")
                    if end >= 0:
                        head = bytes(buffer[:end])
                        del buffer[: end + 4]
                        return parse_request_head(head)
                    if len(buffer) > MAX_REQUEST_HEAD_BYTES:
                        raise RequestRefused(
                            431, f"request head larger than {MAX_REQUEST_HEAD_BYTES} bytes"
                        )
                    try:
                        data = await self.stream.receive_some(_READ_BYTES)
                    except _LOST:
                        return None
                    if not data:
                        return None  # the caller closed (between requests, or mid-head)
                    buffer += data
                    if idle:
                        idle = False
                        self.idle._waiting.discard(waiting)
            finally:
                self.idle._waiting.discard(waiting)
        return None  # no head in time, or shutting down: close

    async def _refuse(self, refused: RequestRefused) -> None:
        body = refused.reason.encode("ascii", "replace")
        await self.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (refused.status, reason_phrase(refused.status), len(body), body)
        )

    async def write(self, data: bytes) -> None:
        if self.peer_gone:
            return
        try:
            await self.stream.send_all(data)
        except _LOST:
            self.peer_gone = True  # the app learns of it from receive(): http.disconnect

    async def read_more(self, max_bytes: int = _READ_BYTES) -> bool:
        """Read into the buffer; False when the caller is gone."""
        try:
            data = await self.stream.receive_some(max_bytes)
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
        self.body_left = head.content_length or 0
        self.chunks = ChunkedDecoder() if head.chunked else None
        self.body_done = not head.has_body
        self.body_given = False
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        self.chunked_answer = False
        self.close_after = not head.keep_alive
        self.complete = False
        if head.expect_continue and head.has_body:
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
        if not self.body_done:
            return await self._body_piece()
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await self._wait_disconnect()

    async def _body_piece(self) -> dict[str, Any]:
        connection = self.connection
        if self.chunks is not None:
            while True:
                if not connection.buffer and not await connection.read_more():
                    return _DISCONNECT
                data = bytes(connection.buffer)
                connection.buffer.clear()
                try:
                    body, after = self.chunks.feed(data)
                except H1ProtocolError as error:
                    # Where the body ends is unknown now: answer 400 and read no more.
                    if not self.head_sent:
                        await self.answer_plainly(400, str(error).encode())
                    connection.peer_gone = True
                    return _DISCONNECT
                if self.chunks.done:
                    connection.buffer += after
                    self.body_done = self.body_given = True
                    return {"type": "http.request", "body": body, "more_body": False}
                if body:
                    return {"type": "http.request", "body": body, "more_body": True}
        if not connection.buffer and not await connection.read_more(
            min(self.body_left, _READ_BYTES)
        ):
            return _DISCONNECT
        take = min(self.body_left, len(connection.buffer))
        body = bytes(connection.buffer[:take])
        del connection.buffer[:take]
        self.body_left -= take
        self.body_done = self.body_given = self.body_left == 0
        return {"type": "http.request", "body": body, "more_body": not self.body_done}

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
        out = b"" if self.head_sent else self._encode_head()
        if self.head.method == "HEAD":
            body = b""
        if self.chunked_answer:
            if body:
                out += b"%x\r\n%s\r\n" % (len(body), body)
            if not more:
                out += _LAST_CHUNK
        else:
            out += body
        self.complete = not more
        await self.connection.write(out)

    def _encode_head(self) -> bytes:
        self.head_sent = True
        lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, reason_phrase(self.status))]
        length_given = False
        for name, value in self.response_headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length_given = True
            elif lowered == b"connection" and b"close" in value.lower():
                self.close_after = True
            elif lowered == b"transfer-encoding":
                continue  # framing is ours to decide
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"date: %s\r\n" % _http_date())
        if not length_given and self.status >= 200 and self.status not in (204, 304):
            if self.head.http_version == "1.1":
                self.chunked_answer = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                self.close_after = True  # HTTP/1.0: the body ends when the connection does
        if self.close_after or self.connection.idle.terminated:
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
