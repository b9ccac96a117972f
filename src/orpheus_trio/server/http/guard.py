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
from typing import Any

import h11

from .state import CURRENT_CONNECTION, ConnectionState

__all__ = [
    "CURRENT_CONNECTION",
    "ConnectionState",
    "StrictH11Connection",
    "check_request_head",
    "continue_on_receive",
]

_HEAD_END = re.compile(rb"\n\r?\n")


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
