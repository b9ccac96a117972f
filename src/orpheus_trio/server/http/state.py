"""One connection's facts that the app reads: bytes sent, closed, a broken body, a held ``100 Continue``.

The run shell sets :data:`CURRENT_CONNECTION` in each connection's task; the app
reads it to log what the caller really got (499 when it left before any byte,
400 when the request's body framing was broken).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

__all__ = ["CURRENT_CONNECTION", "ConnectionState"]


class ConnectionState:
    """One connection's bytes sent, its held-back ``100 Continue`` and its broken body."""

    __slots__ = ("_held_continue", "_send_raw", "body_refused", "bytes_sent", "closed")

    def __init__(self, send_raw: Callable[[bytes], Awaitable[None]]) -> None:
        self._send_raw = send_raw
        self._held_continue: bytes | None = None
        self.bytes_sent = 0
        self.closed = False
        #: Why the current request's body could not be read (its ``http.disconnect``
        #: is then a 400 of ours, not the caller leaving); ``None`` when it could.
        self.body_refused: str | None = None

    def hold_continue(self, answer: bytes) -> None:
        """Keep ``answer`` (a ``100 Continue``) until the app asks for the body."""
        self._held_continue = answer

    async def release_continue(self) -> None:
        """The app wants the body: send the held ``100 Continue``, if any."""
        held, self._held_continue = self._held_continue, None
        if held is not None and not self.closed:
            await self._send_raw(held)


CURRENT_CONNECTION: ContextVar[ConnectionState | None] = ContextVar(
    "orpheus_trio_connection", default=None
)
