"""The realtime socket's shell on trio's MockClock: exact times for cancel, chunking, idle, ping.

The server side runs :class:`RealtimeEndpoint` on an in-memory stream; the
client is wsproto's client side, so every byte is a real WebSocket frame.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)

from orpheus_trio.server.engines.synthetic import SyntheticEngine
from orpheus_trio.server.realtime import Limits, RealtimeEndpoint, decode_audio


class Client:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []

    async def send(self, **message: Any) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(json.dumps(message))))

    async def next(self) -> Event:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.pending += list(self.ws.events())
        return self.pending.pop(0)


async def connect(
    nursery: trio.Nursery, endpoint: RealtimeEndpoint
) -> Client:
    server_side, client_side = trio.testing.memory_stream_pair()
    client = Client(client_side)
    request = client.ws.send(Request(host="x", target="/v1/tts/realtime"))
    head = request.split(b"\r\n\r\n")[0].split(b"\r\n")
    headers = [tuple(p.strip() for p in line.split(b":", 1)) for line in head[1:]]
    nursery.start_soon(endpoint.serve, server_side, b"/v1/tts/realtime", headers, b"")
    assert isinstance(await client.next(), AcceptConnection)
    return client


def endpoint(engine: SyntheticEngine, **options: Any) -> RealtimeEndpoint:
    limits = options.pop("limits", Limits())
    return RealtimeEndpoint(engine, limits=limits, **{"ping_interval_s": 1000.0, **options})


async def test_cancel_ends_audio_at_the_cancel_instant_and_stops_the_engine(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    engine = SyntheticEngine(defaults={"rtf": 1.0, "chunk_samples": 2400})  # a chunk per 100 ms
    client = await connect(nursery, endpoint(engine))
    start = trio.current_time()
    await client.send(context_id="a", text="One sentence that takes a while to say.")
    event = await client.next()
    assert isinstance(event, BytesMessage) and decode_audio(event.data)[0] == "a"
    await trio.sleep(0.05)  # mid-way through the second chunk
    cancelled_at = trio.current_time()
    await client.send(type="cancel", context_id="a")
    event = await client.next()
    assert isinstance(event, TextMessage)  # no audio after the cancel
    assert json.loads(event.data) == {
        "type": "done", "context_id": "a", "chunks": 1, "samples": 2400, "cancelled": True,
    }  # fmt: skip
    assert trio.current_time() == cancelled_at  # the answer costs no (mock) time at all
    assert cancelled_at - start == 0.05  # the first chunk came at once, the next was due at 0.1
    await trio.testing.wait_all_tasks_blocked()
    assert engine.requests_cancelled == 1


async def test_a_sentence_with_nothing_after_it_is_spoken_after_the_chunker_end_wait(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await connect(nursery, endpoint(SyntheticEngine()))
    start = trio.current_time()
    await client.send(context_id="a", text="Ends like this.", **{"continue": True})
    assert isinstance(await client.next(), BytesMessage)
    assert trio.current_time() - start == 0.1  # SentenceChunker's end_wait_s


async def test_an_idle_socket_closes_exactly_at_the_idle_timeout(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await connect(nursery, endpoint(SyntheticEngine(), limits=Limits(idle_timeout_s=5.0)))
    start = trio.current_time()
    await trio.sleep(3.0)
    await client.send(type="flush", context_id="x")  # activity (an error) restarts the timer
    assert json.loads((await client.next()).data)["code"] == "not_found"  # type: ignore[attr-defined]
    event = await client.next()
    assert isinstance(event, CloseConnection) and (event.code, event.reason) == (1000, "idle")
    assert trio.current_time() - start == 8.0


async def test_no_pong_by_the_next_ping_closes_1011(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = await connect(nursery, endpoint(SyntheticEngine(), ping_interval_s=2.0))
    start = trio.current_time()
    assert isinstance(await client.next(), Ping)
    assert trio.current_time() - start == 2.0
    event = await client.next()  # never answered
    assert isinstance(event, CloseConnection) and event.code == 1011
    assert trio.current_time() - start == 4.0
