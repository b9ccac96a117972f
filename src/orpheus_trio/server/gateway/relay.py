"""The gateway's relay: the winning worker's chunk lines written on as they came.

The client (:class:`~orpheus_trio.client.OrpheusTTS`) still routes, hedges and
fails over up to the first audio. Its transport is wrapped in
:class:`RelayTransport`, which keeps each attempt's response and the bytes read
from it so far. Once the race is won, the gateway takes the winner's response
over: a relaying frame decoder (``FrameDecoder(relay=True)``) checks every line
with the same rules as the client's (seq order, eos totals, strict base64, the
line limit) and hands on the checked chunk lines, which the server writes out
as they are, one write per upstream read. No audio is decoded to PCM and
encoded again, and nothing that failed a check is ever written.

When the relayed stream fails, the failure is handed back to the client's own
stream (:meth:`CapturedResponse.fail`), so its breaker and router judge it as
they judge any stream: the gateway keeps no failure policy of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from ...transports.base import ResponseStream, StreamRequest, Transport

__all__ = ["CapturedResponse", "RelayTransport", "capturing"]

#: The responses opened for the request being forwarded, set around ``open_stream``
#: (the race's attempt tasks inherit it); ``None`` outside.
_CAPTURE: ContextVar[list[CapturedResponse] | None] = ContextVar(
    "orpheus_gateway_capture", default=None
)


@contextmanager
def capturing() -> Iterator[list[CapturedResponse]]:
    """Collect every response the client opens inside the block (the race's attempts).

    Enter it around ``await client.open_stream(...).__aenter__()`` only: a
    context variable must not be set across a ``yield`` of an async generator.
    """
    captured: list[CapturedResponse] = []
    token = _CAPTURE.set(captured)
    try:
        yield captured
    finally:
        _CAPTURE.reset(token)


class CapturedResponse:
    """A :class:`~orpheus_trio.transports.base.ResponseStream` that remembers what it read.

    Until :meth:`take_over` it is the client's: every piece it returns is also
    kept. After it, the gateway reads it with :meth:`receive_relayed`; the
    client reads it again only to learn of a failure (:meth:`fail`).
    """

    __slots__ = ("_failure", "_inner", "_received", "closed", "request_id")

    def __init__(self, inner: ResponseStream, request_id: str | None) -> None:
        self._inner = inner
        self._received: bytearray | None = bytearray()
        self._failure: BaseException | None = None
        self.request_id = request_id  # the X-Request-Id it was sent with
        self.closed = False

    @property
    def status(self) -> int:
        return self._inner.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._inner.headers

    @property
    def answered_id(self) -> str | None:
        """The id the client names this attempt by (the worker's echo, else the sent one)."""
        return self._inner.headers.get("x-request-id", self.request_id)

    async def receive(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        data = await self._inner.receive()
        if self._received is not None:
            self._received += data
        return data

    def take_over(self) -> bytes:
        """Stop keeping what is read; return the body bytes the client read so far."""
        received, self._received = self._received, None
        return bytes(received) if received is not None else b""

    async def receive_relayed(self) -> bytes:
        return await self._inner.receive()

    def fail(self, error: BaseException) -> None:
        """The client's next read of this response raises ``error``."""
        self._failure = error

    async def aclose(self) -> None:
        self.closed = True
        self._received = None
        await self._inner.aclose()


class RelayTransport:
    """Wraps the client's transport so the gateway can take the winning response over."""

    def __init__(self, inner: Transport, *, owns_inner: bool) -> None:
        self._inner = inner
        self._owns_inner = owns_inner

    async def open_stream(self, request: StreamRequest) -> ResponseStream:
        response = await self._inner.open_stream(request)
        captured = _CAPTURE.get()
        if captured is None:
            return response
        wrapped = CapturedResponse(response, request.headers.get("X-Request-Id"))
        captured.append(wrapped)
        return wrapped

    async def aclose(self) -> None:
        if self._owns_inner:
            await self._inner.aclose()


def winner_of(captured: list[CapturedResponse], request_id: str) -> CapturedResponse | None:
    """The one open response the race's winner ``request_id`` reads, or ``None`` if
    it cannot be told apart (the gateway then forwards the client's PCM instead)."""
    open_ = [r for r in captured if not r.closed and r.answered_id == request_id]
    return open_[0] if len(open_) == 1 else None
