"""The app on the built-in connection loop over in-memory streams, for exact timings.

No socket and no real time: with ``autojump_clock`` (trio's MockClock,
``autojump_threshold=0``) every pause the engine or the server takes is a jump
of virtual time, so a test asserts *when* each byte arrived, exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
import trio.testing

from orpheus_trio.server import Engine, OrpheusApp, ServerConfig, create_app
from orpheus_trio.server.engines.synthetic import SyntheticEngine
from orpheus_trio.server.http.connection import HeadWaits, serve_connection
from orpheus_trio.server.http.fairness import ConnectionFairness, FairnessLimits
from orpheus_trio.server.http.state import CURRENT_CONNECTION, ConnectionState


class _ServedStream:
    """The server's end, counting what it sends as the run shell's stream does."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self.state = ConnectionState(self._stream.send_all)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)
        self.state.bytes_sent += len(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        if not data:
            self.state.closed = True
        return data

    async def send_eof(self) -> None:
        assert isinstance(self._stream, trio.abc.HalfCloseableStream)
        await self._stream.send_eof()


@dataclass
class Answer:
    """A response as it arrived: each body piece with the (virtual) time it came."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    pieces: list[tuple[float, bytes]] = field(default_factory=list)
    #: When the response ended, or the server closed the connection.
    ended_at: float | None = None
    closed: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.pieces)

    def json(self) -> Any:
        return json.loads(self.body)

    def timed_frames(self) -> list[tuple[float, dict[str, Any]]]:
        """Every NDJSON frame with the time its last byte arrived."""
        frames, line = [], b""
        for at, data in self.pieces:
            line += data
            *whole, line = line.split(b"\n")
            frames += [(at, json.loads(w)) for w in whole if w.strip()]
        return frames


class MemoryServer:
    """``app`` served on fresh in-memory connections, one :meth:`connect` each."""

    def __init__(self, nursery: trio.Nursery, app: OrpheusApp) -> None:
        self.nursery = nursery
        self.app = app
        fairness = ConnectionFairness(FairnessLimits.of(app.config), trio.current_time)
        self.waits = HeadWaits(fairness)

    async def connect(self) -> trio.abc.Stream:
        """A new connection; returns the client's end."""
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self._serve, server)
        return client

    async def _serve(self, stream: trio.abc.Stream) -> None:
        served = _ServedStream(stream)
        CURRENT_CONNECTION.set(served.state)
        fairness = self.waits.fairness
        slot = fairness.admit(("127.0.0.1", id(served)))  # one client each: no caps met
        assert slot is not None
        try:
            await serve_connection(
                self.app,
                served,
                slot=slot,
                waits=self.waits,
                client=("127.0.0.1", 50000),
                server=("127.0.0.1", 8000),
            )
        finally:
            fairness.release(slot)
            await stream.aclose()

    async def request(self, raw: bytes, *, method: str = "POST") -> Answer:
        """Send ``raw`` on a new connection and read the one answer (or the close)."""
        client = await self.connect()
        await client.send_all(raw)
        return await read_answer(client, method)

    async def post(self, path: str, body: dict[str, Any]) -> Answer:
        data = json.dumps(body).encode()
        return await self.request(
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
        )


async def read_answer(client: trio.abc.Stream, method: str = "POST") -> Answer:
    """Read one response from ``client``, timing each body piece; stop at its end or the close."""
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    answer = Answer()
    while answer.ended_at is None:
        data = await client.receive_some(65536)
        if not data:
            answer.closed = True
            answer.ended_at = trio.current_time()
            parser.receive_data(b"")
        else:
            parser.receive_data(data)
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError:  # the close cut the body short
                break
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                break
            if isinstance(event, h11.Response):
                answer.status = event.status_code
                answer.headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                answer.pieces.append((trio.current_time(), bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                answer.ended_at = trio.current_time()
                break
    return answer


def memory_server(
    nursery: trio.Nursery, engine: Engine | None = None, **settings: Any
) -> MemoryServer:
    """The app for ``engine`` (a fresh SyntheticEngine by default) with ``settings``."""
    config = ServerConfig(**{"port": 0, **settings})
    return MemoryServer(nursery, create_app(engine or SyntheticEngine(), config))
