"""Test your app against :class:`~orpheus_trio.OrpheusTTS` without a server.

As with ``httpx.MockTransport``, a handler answers each request::

    from orpheus_trio import OrpheusTTS
    from orpheus_trio.testing import MockResponse, MockTransport

    def handler(request):
        if request.json()["voice"] == "nobody":
            return MockResponse.error(400, "invalid_param", "unknown voice")
        return MockResponse.audio(b"\\x00\\x01" * 800, b"\\x02\\x03" * 800)

    tts = OrpheusTTS("http://tts.test", transport=MockTransport(handler))
    pcm = await tts.synthesize("Hello.")

The handler gets the :class:`~orpheus_trio.transports.base.StreamRequest` the
client built and returns a :class:`MockResponse` (it may be ``async``; it
may raise, e.g. ``httpx.ConnectError``, to play a network fault). The client
runs all of its policy on top: routing, hedging, failover, frame checks.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import anyio
import anyio.lowlevel

from .protocol.frames import encode_chunk, encode_eos, encode_error, encode_metrics
from .transports.base import ResponseStream, StreamRequest

__all__ = ["MockResponse", "MockTransport"]


@dataclass(frozen=True)
class MockResponse:
    """An answer: a status, headers, and the body as the pieces it arrives in."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Sequence[bytes] = ()

    @classmethod
    def audio(cls, *pcm: bytes, **metrics: Any) -> MockResponse:
        """A good stream: one chunk per ``pcm`` (even lengths), a ``metrics``
        frame with ``metrics`` if any (``truncated=True`` says the speech was cut), then ``eos``."""
        pieces = [encode_chunk(seq, data) for seq, data in enumerate(pcm)]
        if metrics:
            pieces.append(encode_metrics(**metrics))
        pieces.append(encode_eos(len(pcm), sum(len(data) for data in pcm) // 2))
        return cls(200, {"Content-Type": "application/x-ndjson"}, tuple(pieces))

    @classmethod
    def error(
        cls, status: int, code: str, message: str = "", *, retry_after_s: float | None = None
    ) -> MockResponse:
        """A JSON error answer before any audio (``retry_after_s``: its ``Retry-After``)."""
        body = httpx.Response(status, json={"error": {"code": code, "message": message}}).content
        headers = {"Content-Type": "application/json"}
        if retry_after_s is not None:
            headers["Retry-After"] = f"{retry_after_s:g}"
        return cls(status, headers, (body,))

    @classmethod
    def in_band_error(cls, code: str, message: str = "", *, after: Sequence[bytes] = ()) -> MockResponse:
        """A stream whose chunks ``after`` are followed by an ``error`` frame."""
        pieces = [encode_chunk(seq, data) for seq, data in enumerate(after)]
        pieces.append(encode_error(code, message))
        return cls(200, {"Content-Type": "application/x-ndjson"}, tuple(pieces))


Handler = Callable[[StreamRequest], "MockResponse | Awaitable[MockResponse]"]


class _Stream:
    """A :class:`~orpheus_trio.transports.base.ResponseStream` over a :class:`MockResponse`."""

    def __init__(self, response: MockResponse) -> None:
        self.status = response.status
        self.headers: Mapping[str, str] = httpx.Headers(dict(response.headers))
        self._pieces = list(response.body)
        self.closed = False

    async def receive(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise anyio.ClosedResourceError("receive on a closed response")
        return self._pieces.pop(0) if self._pieces else b""

    async def aclose(self) -> None:
        self.closed = True
        await anyio.lowlevel.checkpoint()


class MockTransport:
    """A :class:`~orpheus_trio.transports.base.Transport` whose answers come from ``handler``.

    ``requests`` lists every request sent, in order.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[StreamRequest] = []

    async def open_stream(self, request: StreamRequest) -> ResponseStream:
        self.requests.append(request)
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if not isinstance(answer, MockResponse):
            raise TypeError(f"the handler must return a MockResponse, got {type(answer).__name__}")
        await anyio.lowlevel.checkpoint()
        return _Stream(answer)

    async def aclose(self) -> None:
        pass
