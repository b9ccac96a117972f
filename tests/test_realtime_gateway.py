"""GET /v1/tts/realtime on the gateway: each piece goes to a worker through the gateway's client."""

from __future__ import annotations

import json
from typing import Any

import trio
from _support_gateway import start_gateway, start_worker
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
