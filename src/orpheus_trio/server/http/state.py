"""One connection's facts that the app reads: bytes sent, closed, a held ``100 Continue``.

The run shell sets :data:`CURRENT_CONNECTION` in each connection's task; the app
reads it to log what the caller really got (499 when it left before any byte).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

__all__ = ["CURRENT_CONNECTION", "ConnectionState"]

#: The status line of an informational 100 answer.
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
