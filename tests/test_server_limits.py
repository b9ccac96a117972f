"""Admission, deadlines, client disconnects and draining, end to end over 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _support_memory import memory_server
from _support_server import RunningServer, StartServer, parse_frames
from prometheus_client.parser import text_string_to_metric_families

from orpheus_trio.server.engines.synthetic import SyntheticEngine


SLOW = {"chunks": 4, "chunk_samples": 2400, "rtf": 1.0}  # 0.3 s of pacing


async def gauge(client: httpx.AsyncClient, base_url: str, name: str) -> float:
    text = (await client.get(base_url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exported")


async def wait_until_gauge(
    client: httpx.AsyncClient, base_url: str, name: str, value: float
) -> None:
    with trio.fail_after(3):
        while await gauge(client, base_url, name) != value:
            await trio.sleep(0.01)


@asynccontextmanager
async def one_slot_taken(
    start_server: StartServer, *, hog_ms: int
) -> AsyncIterator[tuple[httpx.AsyncClient, RunningServer]]:
    """A server with one slot and one queue place, its slot held by a request whose
    first audio comes after ``hog_ms``; on exit that request is waited for."""
    server = await start_server(max_concurrency=1, max_queue=1)
    async with (
        httpx.AsyncClient(base_url=server.base_url) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(
            lambda: client.post("/v1/tts/stream", json={"text": "hog", "ttfb_ms": hog_ms})
        )
        await wait_until_gauge(client, server.base_url, "orpheus_inflight", 1)
        yield client, server


async def test_past_the_queue_requests_get_429_with_retry_after(
    start_server: StartServer,
) -> None:
    server = await start_server(max_concurrency=1, max_queue=1)
    results: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(base_url=server.base_url) as client:

        async def post(name: str, body: dict[str, Any]) -> None:
            results[name] = await client.post("/v1/tts/stream", json=body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post, "running", {"text": "a", **SLOW})
            await wait_until_gauge(client, server.base_url, "orpheus_inflight", 1)
            nursery.start_soon(post, "queued", {"text": "b", **SLOW})
            await wait_until_gauge(client, server.base_url, "orpheus_queue_depth", 1)
            await post("rejected", {"text": "c", "chunks": 1})
            system = (await client.get("/v1/system")).json()
    assert (system["inflight"], system["queue_depth"], system["capacity"]) == (1, 1, 1)
    rejected = results["rejected"]
    assert rejected.status_code == 429
    assert rejected.json()["error"]["code"] == "overloaded"
    assert int(rejected.headers["retry-after"]) >= 1
    assert results["running"].headers["x-queue-depth"] == "1"
    assert results["queued"].headers["x-queue-depth"] == "2"
    # Both admitted streams completed; the queued one started after the first.
    for name in ("running", "queued"):
        assert parse_frames(results[name].content)[-1] == {
            "type": "eos",
            "chunks": 4,
            "samples": 9600,
        }


async def test_metrics_frames_carry_queue_hints(start_server: StartServer) -> None:
    server = await start_server(max_concurrency=2, max_queue=4)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream", json={"text": "hint", "chunks": 2}
        )
    first, *_, last_metrics, eos = parse_frames(response.content)
    # The opening frame: the load, and the voice that speaks (the engine's default).
    assert first == {
        "type": "metrics", "queue_depth": 0, "inflight": 1, "capacity": 2, "voice": "tara"
    }
    assert last_metrics["type"] == "metrics" and last_metrics["ttfb_ms"] >= 0
    assert eos["type"] == "eos"


async def test_deadline_ends_the_stream_with_in_band_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = memory_server(nursery)
    answer = await server.post(
        "/v1/tts/stream",
        {"text": "late", "chunks": 20, "chunk_samples": 2400, "rtf": 1.0, "timeout_s": 0.35},
    )
    assert answer.status == 200
    frames = answer.timed_frames()
    # A chunk every 0.1 s from 0 (rtf 1.0), then the deadline at exactly 0.35 s.
    chunk_times = [at for at, frame in frames if frame["type"] == "chunk"]
    assert chunk_times == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=1e-9)
    at, last = frames[-1]
    assert last == {
        "type": "error",
        "code": "deadline_exceeded",
        "message": "deadline of 0.35 s passed after 4 chunks",
    }
    assert at == answer.ended_at == 0.35


async def test_default_deadline_applies_and_timeout_s_is_capped(
    start_server: StartServer,
) -> None:
    server = await start_server(default_timeout_s=0.2, max_timeout_s=0.3)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        by_default = await client.post(
            "/v1/tts/stream", json={"text": "d", "ttfb_ms": 2000}
        )
        capped = await client.post(
            "/v1/tts/stream", json={"text": "d", "ttfb_ms": 2000, "timeout_s": 100}
        )
    for response in (by_default, capped):
        frames = parse_frames(response.content)
        assert [f["type"] for f in frames] == ["metrics", "error"]
        assert frames[-1]["code"] == "deadline_exceeded"


async def test_deadline_counts_time_spent_in_the_queue(
    start_server: StartServer,
) -> None:
    async with one_slot_taken(start_server, hog_ms=600) as (client, _):
        queued = await client.post(
            "/v1/tts/stream", json={"text": "q", "chunks": 1, "timeout_s": 0.2}
        )
    assert parse_frames(queued.content)[-1]["code"] == "deadline_exceeded"


async def test_client_disconnect_cancels_the_engine_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    engine = SyntheticEngine()
    server = memory_server(nursery, engine)
    body = json.dumps({"text": "long", "chunks": 1000, "chunk_samples": 2400, "rtf": 1.0})
    client = await server.connect()
    await client.send_all(
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
    )
    received = b""
    while b'"type":"chunk"' not in received:
        received += await client.receive_some(65536)
    registry = server.app.metrics.registry
    assert registry.get_sample_value("orpheus_inflight") == 1
    await client.aclose()  # mid-stream
    left_at = trio.current_time()
    for _ in range(1000):  # checkpoints only: this task never blocks, so no time passes
        if engine.requests_cancelled and not server.app.admission.running:
            break
        await trio.lowlevel.checkpoint()
    assert engine.requests_cancelled == 1
    assert trio.current_time() == left_at
    assert registry.get_sample_value("orpheus_inflight") == 0


async def test_client_disconnect_while_queued_frees_the_slot(
    start_server: StartServer,
) -> None:
    async with one_slot_taken(start_server, hog_ms=800) as (client, server):
        with trio.move_on_after(0.2):
            await client.post("/v1/tts/stream", json={"text": "gone", "chunks": 1})
        await wait_until_gauge(client, server.base_url, "orpheus_queue_depth", 0)
        # The freed queue slot admits the next request instead of 429.
        again = await client.post("/v1/tts/stream", json={"text": "next", "chunks": 1})
    assert again.status_code == 200


async def test_draining_refuses_new_requests_while_in_flight_streams_finish(
    start_server: StartServer,
) -> None:
    server = await start_server(drain_grace_s=5)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        async with client.stream(
            "POST", "/v1/tts/stream", json={"text": "finish me", **SLOW}
        ) as in_flight:
            lines = in_flight.aiter_lines()
            assert json.loads(await lines.__anext__())["type"] == "metrics"
            server.drain.set()
            refused = await client.post(
                "/v1/tts/stream", json={"text": "new", "chunks": 1}
            )
            system = (await client.get("/v1/system")).json()
            rest = [json.loads(line) async for line in lines if line]
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        assert system["draining"] is True
        assert rest[-1] == {"type": "eos", "chunks": 4, "samples": 9600}
    with trio.fail_after(3):
        await server.stopped.wait()


async def test_streams_past_the_drain_grace_end_with_cancelled(
    start_server: StartServer,
) -> None:
    server = await start_server(drain_grace_s=0.2)
    results: list[httpx.Response] = []
    async with (
        httpx.AsyncClient(base_url=server.base_url) as client,
        trio.open_nursery() as nursery,
    ):

        async def endless() -> None:
            body = {"text": "x", "chunks": 1000, "chunk_samples": 2400, "rtf": 1.0}
            results.append(await client.post("/v1/tts/stream", json=body))

        nursery.start_soon(endless)
        await wait_until_gauge(client, server.base_url, "orpheus_inflight", 1)
        server.drain.set()
        with trio.fail_after(3):
            await server.stopped.wait()
    frames = parse_frames(results[0].content)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "cancelled"
    assert 1 <= len([f for f in frames if f["type"] == "chunk"]) <= 6
    assert server.engine.requests_cancelled == 1  # type: ignore[attr-defined]
