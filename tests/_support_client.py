"""A scripted fake transport for client tests: no sockets, exact timings on MockClock.

Written on AnyIO, so the same scripts drive the client under asyncio too (on
real time there: keep the delays short).

Each attempt follows a :class:`Script`: wait ``headers_after`` seconds, then
either raise ``fail`` or answer ``status`` with ``headers``; the body is a list
of ``(delay, bytes)`` pieces, then either the end (``b""``) or ``body_error``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from orpheus_trio.protocol.frames import encode_chunk, encode_eos, encode_error, encode_metrics
from orpheus_trio.transports.base import StreamRequest


@dataclass
class Script:
    headers_after: float = 0.0
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Sequence[tuple[float, bytes]] = ()
    fail: Exception | None = None
    body_error: Exception | None = None


def pcm(tag: int, n_bytes: int = 8) -> bytes:
    """Recognisable audio: every byte is ``tag``."""
    return bytes([tag]) * n_bytes


def speech(
    tag: int,
    *,
    first_after: float,
    chunks: int = 3,
    gap: float = 0.01,
    n_bytes: int = 8,
) -> Script:
    """A good stream whose first chunk arrives ``first_after`` s after the request, all bytes ``tag``."""
    pieces = [
        (first_after if seq == 0 else gap, encode_chunk(seq, pcm(tag + seq, n_bytes)))
        for seq in range(chunks)
    ]
    pieces.append((0.0, encode_eos(chunks, chunks * n_bytes // 2)))
    return Script(body=pieces)


def expected_audio(tag: int, *, chunks: int = 3, n_bytes: int = 8) -> bytes:
    return b"".join(pcm(tag + seq, n_bytes) for seq in range(chunks))


def status(
    code: int,
    error_code: str,
    message: str = "nope",
    *,
    after: float = 0.0,
    **headers: str,
) -> Script:
    body = json.dumps({"error": {"code": error_code, "message": message}}).encode()
    return Script(headers_after=after, status=code, headers=headers, body=[(0.0, body)])


def in_band_error(code: str, message: str = "failed", *, after: float = 0.0) -> Script:
    return Script(body=[(after, encode_error(code, message))])


def metrics(**values: object) -> bytes:
    return encode_metrics(**values)


@dataclass
class FakeResponse:
    endpoint: str
    script: Script
    status: int
    headers: Mapping[str, str]
    closed_at: float | None = None
    bytes_sent: int = 0
    _next: int = 0

    async def receive(self) -> bytes:
        if self.closed_at is not None:
            raise RuntimeError("receive on a closed response")
        if self._next < len(self.script.body):
            delay, data = self.script.body[self._next]
            await anyio.sleep(delay)
            self._next += 1
            self.bytes_sent += len(data)
            return data
        await anyio.lowlevel.checkpoint()
        if self.script.body_error is not None:
            raise self.script.body_error
        return b""

    async def aclose(self) -> None:
        if self.closed_at is None:
            self.closed_at = anyio.current_time()
        await anyio.lowlevel.checkpoint()


@dataclass
class Started:
    """One attempt as the fake saw it."""

    at: float
    endpoint: str
    request: StreamRequest
    response: FakeResponse | None = None

    @property
    def body(self) -> dict[str, object]:
        decoded: dict[str, object] = json.loads(self.request.body)
        return decoded


class FakeTransport:
    """A transport whose answers follow ``script(endpoint, attempt_number)``."""

    def __init__(self, script: Callable[[str, int], Script]) -> None:
        self._script = script
        self.started: list[Started] = []
        self.closed = False

    async def open_stream(self, request: StreamRequest) -> FakeResponse:
        started = Started(anyio.current_time(), request.endpoint, request)
        self.started.append(started)
        script = self._script(request.endpoint, len(self.started) - 1)
        await anyio.sleep(script.headers_after)
        if script.fail is not None:
            raise script.fail
        headers = {k.lower(): v for k, v in script.headers.items()}
        started.response = FakeResponse(
            request.endpoint, script, script.status, headers
        )
        return started.response

    async def aclose(self) -> None:
        self.closed = True

    @property
    def start_times(self) -> list[float]:
        return [s.at for s in self.started]

    def responses(self) -> list[FakeResponse]:
        return [s.response for s in self.started if s.response is not None]


def in_order(*scripts: Script) -> Callable[[str, int], Script]:
    """The n-th attempt (whatever its endpoint) follows the n-th script; the last repeats."""
    return lambda endpoint, n: scripts[min(n, len(scripts) - 1)]


def per_endpoint(
    scripts: Mapping[str, Sequence[Script]],
) -> Callable[[str, int], Script]:
    """Each endpoint follows its own list of scripts in turn; its last repeats."""
    used: dict[str, int] = {}

    def pick(endpoint: str, n: int) -> Script:
        k = used.get(endpoint, 0)
        used[endpoint] = k + 1
        own = scripts[endpoint]
        return own[min(k, len(own) - 1)]

    return pick
