"""One request's exchange: the ASGI types, :class:`HTTPError` and the response state.

Every answer the app gives starts with :meth:`Exchange.start`, which adds the
request id and the security headers (:mod:`.security_headers`), so no route
can forget them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import trio

from .http.state import ConnectionState
from .security_headers import with_security_headers

__all__ = [
    "Exchange",
    "HTTPError",
    "Handler",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "request_headers",
    "request_id",
    "send_bytes",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: A route's handler: the request's headers (lower-case names), its ``receive``, its exchange.
Handler = Callable[[dict[str, str], Receive, "Exchange"], Awaitable[None]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class HTTPError(Exception):
    """Answer with ``status`` and the contract's JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        #: The request body was not read to the end, so the connection must close.
        self.close = close
        super().__init__(f"{status} {code}: {message}")


@dataclass
class Exchange:
    """One request's response state and the facts its log line reports."""

    send: Send
    request_id: str
    method: str
    path: str
    received_at: float
    status: int | None = None
    code: str | None = None
    started: bool = False
    finished: bool = False
    #: The route synthesizes (needs the key, counts in the request metrics, logged at INFO).
    synthesis: bool = False
    first_audio_at: float | None = None
    chunks: int = 0
    samples: int = 0
    queue_depth: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The connection it came on (None outside the run shell) and what that
    #: connection had sent before this answer began.
    connection: ConnectionState | None = None
    sent_before: int = 0

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.started = True
        headers.append((b"x-request-id", self.request_id.encode()))
        message = {
            "type": "http.response.start",
            "status": status,
            "headers": with_security_headers(headers),
        }
        with trio.CancelScope(shield=True):
            await self.send(message)

    async def write(self, data: bytes, *, more: bool = True) -> None:
        self.finished = not more
        # Shielded so a deadline never splits a frame; a client that left makes
        # this return at once.
        with trio.CancelScope(shield=True):
            await self.send(
                {"type": "http.response.body", "body": data, "more_body": more}
            )


async def send_bytes(ex: Exchange, status: int, body: bytes, content_type: bytes) -> None:
    """A whole answer in one go, with its length."""
    await ex.start(
        status,
        [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    )
    await ex.write(body, more=False)


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the last of a repeated one wins)."""
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope["headers"]
    }


def request_id(given: str | None) -> str:
    """The caller's ``X-Request-Id`` if it is safe to echo and log, else a new one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex
