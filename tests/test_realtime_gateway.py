"""GET /v1/tts/realtime on the gateway: each piece goes to a worker through the gateway's client."""

from __future__ import annotations

import json
from typing import Any

import trio
from _support_gateway import RecordingEngine, start_gateway, start_worker
from websockets.sync.client import connect

from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream
from orpheus_trio.server.realtime import decode_audio


def speak(base_url: str, messages: list[dict[str, Any]], contexts: int) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    url = base_url.replace("http://", "ws://") + "/v1/tts/realtime"
    audio: dict[str, bytearray] = {}
    answers: list[dict[str, Any]] = []
    with connect(url) as ws:
        for message in messages:
            ws.send(json.dumps(message))
        while sum(m["type"] in ("done", "error") for m in answers) < contexts:
            message = ws.recv(timeout=10)
            if isinstance(message, bytes):
                cid, pcm = decode_audio(message)
                audio.setdefault(cid, bytearray()).extend(pcm)
            else:
                answers.append(json.loads(message))
    return {k: bytes(v) for k, v in audio.items()}, answers


async def test_the_gateway_speaks_realtime_contexts_with_its_workers_audio(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gateway = await start_gateway(nursery, [worker.base_url])
    messages = [
        {"context_id": "a", "text": "Hello there. How", "continue": True},
        {"context_id": "b", "text": "Other voice.", "voice": "leo"},
        {"context_id": "a", "text": " are you?"},
    ]
    audio, answers = await trio.to_thread.run_sync(speak, gateway.base_url, messages, 2)
    want_a = b"".join(b"".join(expected_stream(p, None, {})) for p in ("Hello there.", "How are you?"))
    assert audio["a"] == want_a
    assert audio["b"] == b"".join(expected_stream("Other voice.", "leo", {}))
    assert {m["context_id"]: m["samples"] for m in answers} == {
        "a": len(want_a) // 2,
        "b": len(audio["b"]) // 2,
    }


async def test_a_piece_whose_worker_fails_before_audio_moves_to_another(
    nursery: trio.Nursery,
) -> None:
    broken = await start_worker(nursery, SyntheticEngine(defaults={"fail_status": 503}))
    healthy = await start_worker(nursery)
    gateway = await start_gateway(nursery, [broken.base_url, healthy.base_url])
    messages = [{"context_id": f"c{i}", "text": f"Sentence number {i}."} for i in range(4)]
    audio, answers = await trio.to_thread.run_sync(speak, gateway.base_url, messages, 4)
    assert [m["type"] for m in answers] == ["done"] * 4
    for i in range(4):
        assert audio[f"c{i}"] == b"".join(expected_stream(f"Sentence number {i}.", None, {}))


async def test_a_worker_failing_after_audio_is_an_error_for_that_context_only(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery, SyntheticEngine(defaults={"cut_after": 1}))
    gateway = await start_gateway(nursery, [worker.base_url])

    def run() -> list[dict[str, Any]]:
        url = gateway.base_url.replace("http://", "ws://") + "/v1/tts/realtime"
        with connect(url) as ws:
            ws.send(json.dumps({"context_id": "a", "text": "A long sentence here."}))
            while True:
                message = ws.recv(timeout=10)
                if isinstance(message, str):
                    first = json.loads(message)
                    break
            ws.send(json.dumps({"type": "flush", "context_id": "gone"}))  # the socket lives on
            return [first, json.loads(ws.recv(timeout=10))]

    error, after = await trio.to_thread.run_sync(run)
    assert (error["type"], error["context_id"]) == ("error", "a")
    assert after["code"] == "not_found"


async def test_a_context_stays_on_the_worker_that_spoke_its_first_audio(
    nursery: trio.Nursery,
) -> None:
    workers = [await start_worker(nursery) for _ in range(2)]
    gateway = await start_gateway(nursery, [w.base_url for w in workers])
    sentences = [f"Sentence number {i}." for i in range(8)]
    # One message per sentence: each is cut as one piece when the next begins.
    messages = [
        {"context_id": f"c{c}", "text": f" {s}" if i else s, "continue": i < len(sentences) - 1}
        for i, s in enumerate(sentences)
        for c in range(4)
    ]
    audio, answers = await trio.to_thread.run_sync(speak, gateway.base_url, messages, 4)
    assert [m["type"] for m in answers] == ["done"] * 4
    # Every context's eight pieces were served by one worker each.
    served = {
        w.base_url: [request_id for request_id, _ in engine_seen(w)] for w in workers
    }
    for c in range(4):
        holders = [url for url, ids in served.items() if any(f".c{c}." in i for i in ids)]
        assert len(holders) == 1, served
        assert sum(f".c{c}." in i for i in served[holders[0]]) == len(sentences)
    assert audio["c0"] == b"".join(b"".join(expected_stream(s, None, {})) for s in sentences)


def engine_seen(worker: Any) -> list[tuple[str, Any]]:
    """The X-Request-Id of each request the worker's recording engine served."""
    return [(request_id or "", params) for request_id, params in worker.engine.seen]


async def test_a_pinned_worker_dying_is_an_error_for_its_context_only(
    nursery: trio.Nursery,
) -> None:
    paced = {"rtf": 1.0, "chunk_samples": 2400}
    first = await start_worker(nursery, RecordingEngine(defaults=paced))
    gateway = await start_gateway(nursery, [first.base_url])

    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        url = gateway.base_url.replace("http://", "ws://") + "/v1/tts/realtime"
        with connect(url) as ws:
            ws.send(json.dumps({"context_id": "a", "text": "One. Two. Three. Four.", "continue": True}))
            assert isinstance(ws.recv(timeout=10), bytes)
            trio.from_thread.run(first.kill)
            while True:
                message = ws.recv(timeout=10)
                if isinstance(message, str):
                    error = json.loads(message)
                    break
            ws.send(json.dumps({"type": "flush", "context_id": "nope"}))
            return error, json.loads(ws.recv(timeout=10))

    error, after = await trio.to_thread.run_sync(run)
    assert (error["type"], error["context_id"]) == ("error", "a")
    assert after["code"] == "not_found"  # the socket lives on
