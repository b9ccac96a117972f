"""What the server enforces below the app, on each HTTP/1.1 connection.

- **Strict framing** (RFC 9112 §6.3, so no proxy in front can be desynchronised):
  a request head with both ``Content-Length`` and ``Transfer-Encoding``, a
  list-valued or repeated ``Content-Length``, or an obs-folded header line is
  refused with 400 and the connection closed. h11 would accept all three
  (it unfolds lines and collapses equal lengths), so the raw head is checked
  before h11 reads it (:class:`StrictH11Connection`).
- **``100 Continue`` only once the app asks for the body**: Hypercorn answers
  ``Expect: 100-continue`` as soon as the head arrives; the connection holds
  that answer back (:class:`ConnectionState`) and sends it when the app first
  calls ``receive()``, which it does only after checking the key and the
  declared length. A refused request is never uploaded.
- **What was sent**: the bytes each connection wrote, so the access log says
  499 when the caller was gone before any byte of the answer left.

The app reads the connection's state through :data:`CURRENT_CONNECTION`
(set in the connection's task; the request tasks Hypercorn starts from it
inherit it).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

import h11

__all__ = [
    "CURRENT_CONNECTION",
    "ConnectionState",
    "StrictH11Connection",
    "check_request_head",
    "continue_on_receive",
]

_HEAD_END = re.compile(rb"\n\r?\n")
#: The status line h11 writes for an informational 100 answer.
_CONTINUE_PREFIX = b"HTTP/1.1 100 "


class ConnectionState:
    """One connection's bytes sent and its held-back ``100 Continue``.

    Hypercorn writes its 100 from the connection's task and the app asks for
    the body from the request's task, in either order: whichever comes
    second sends it.
    """

    __slots__ = ("_body_wanted", "_held_continue", "_send_raw", "bytes_sent", "closed")

    def __init__(self, send_raw: Callable[[bytes], Awaitable[None]]) -> None:
        self._send_raw = send_raw
        self._held_continue: bytes | None = None
        self._body_wanted = False
        self.bytes_sent = 0
        self.closed = False

    def new_request(self) -> None:
        """A request's app task starts (one at a time per HTTP/1.1 connection)."""
        self._body_wanted = False

    def hold_if_continue(self, data: bytes | bytearray | memoryview) -> bool:
        """True (and kept for later) if ``data`` is Hypercorn's automatic 100 answer
        and the app has not asked for the body yet."""
        if bytes(data[: len(_CONTINUE_PREFIX)]) != _CONTINUE_PREFIX or self._body_wanted:
            return False
        self._held_continue = bytes(data)
        return True

    def hold_continue(self, answer: bytes) -> None:
        """Keep ``answer`` (a ``100 Continue``) until the app asks for the body."""
        self._held_continue = answer

    async def release_continue(self) -> None:
        """The app wants the body: send the held ``100 Continue``, if any."""
        self._body_wanted = True
        held, self._held_continue = self._held_continue, None
        if held is not None and not self.closed:
            await self._send_raw(held)


CURRENT_CONNECTION: ContextVar[ConnectionState | None] = ContextVar(
    "orpheus_trio_connection", default=None
)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def continue_on_receive(app: ASGIApp) -> ASGIApp:
    """Wrap an ASGI app so that its first ``receive()`` releases a held ``100 Continue``."""

    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        connection = CURRENT_CONNECTION.get()
        if connection is None or scope.get("type") != "http":
            await app(scope, receive, send)
            return

        connection.new_request()

        async def receive_after_continue() -> Any:
            await connection.release_continue()
            return await receive()

        await app(scope, receive_after_continue, send)

    return wrapped


def check_request_head(head: bytes) -> str | None:
    """Why a raw request head (request line and fields, no blank line) is refused, or ``None``."""
    lengths = 0
    chunked = False
    for line in head.split(b"\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding (a header line starting with a space or tab) is not accepted"
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths += 1
            if b"," in value:
                return "a list-valued Content-Length is not accepted"
        elif name == b"transfer-encoding":
            chunked = True
    if lengths > 1:
        return "more than one Content-Length header"
    if lengths and chunked:
        return "both Content-Length and Transfer-Encoding: send one"
    return None


class StrictH11Connection(h11.Connection):
    """An ``h11.Connection`` that refuses ambiguous request framing (see the module docstring).

    The check runs where h11 turns its buffer into the next event, so h11
    records the failure as the client's protocol error: Hypercorn answers 400
    and closes the connection.
    """

    def _extract_next_receive_event(self) -> Any:
        if self.their_state is h11.IDLE:
            data = self.trailing_data[0]
            end = _HEAD_END.search(data)
            if end is not None:
                reason = check_request_head(data[: end.start()])
                if reason is not None:
                    raise h11.LocalProtocolError(reason, error_status_hint=400)
        return super()._extract_next_receive_event()
