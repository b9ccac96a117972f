"""End to end: synthesis over 127.0.0.1 with a plain HTTP client, frames checked byte by byte."""

from __future__ import annotations

import httpx
import trio
from _support_server import StartServer, audio_of, parse_frames

from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream


async def test_stream_carries_exact_pcm_and_matching_eos(
    start_server: StartServer,
) -> None:
    server = await start_server()
    params = {"chunks": 5, "chunk_samples": 960, "seed": 7}
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream",
            json={"text": "Hello there.", "voice": "leo", **params},
            headers={"X-Request-Id": "req-1"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["x-request-id"] == "req-1"
    assert response.headers["x-queue-depth"] == "1"
    frames = parse_frames(response.content)
    assert audio_of(frames) == expected_stream("Hello there.", "leo", params)
    assert [f["seq"] for f in frames if f["type"] == "chunk"] == [0, 1, 2, 3, 4]
    assert frames[-1] == {"type": "eos", "chunks": 5, "samples": 5 * 960}
    assert frames[0]["type"] == "metrics"
    assert frames[0]["capacity"] == server.config.max_concurrency


async def test_default_chunk_count_follows_text_length(
    start_server: StartServer,
) -> None:
    server = await start_server()
    text = "x" * 40  # 40 * 1200 samples = 23.4 chunks of 2048 -> 24
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/tts/stream", json={"text": text})
    frames = parse_frames(response.content)
    assert audio_of(frames) == expected_stream(text, None, {})
    assert frames[-1]["chunks"] == 24


async def test_request_id_is_made_up_when_absent_or_unsafe(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        plain = await client.post("/v1/tts/stream", json={"text": "a", "chunks": 1})
        unsafe = await client.post(
            "/v1/tts/stream",
            json={"text": "a", "chunks": 1},
            headers={"X-Request-Id": "a b\x7f"},
        )
    assert len(plain.headers["x-request-id"]) == 32
    assert unsafe.headers["x-request-id"] != "a b\x7f"


async def test_paced_stream_takes_rtf_times_audio_duration(
    start_server: StartServer,
) -> None:
    server = await start_server()
    params = {
        "chunks": 6,
        "chunk_samples": 2400,
        "rtf": 0.5,
        "ttfb_ms": 50,
    }  # 0.1 s per chunk
    start = trio.current_time()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/tts/stream", json={"text": "pace", **params})
    elapsed = trio.current_time() - start
    assert audio_of(parse_frames(response.content)) == expected_stream(
        "pace", None, params
    )
    # ttfb 0.05 + 5 gaps of 0.05 = 0.3 s at least.
    assert elapsed >= 0.3


async def test_server_defaults_apply_and_request_params_win(
    start_server: StartServer,
) -> None:
    engine = SyntheticEngine(defaults={"chunks": 2, "seed": 3})
    server = await start_server(engine)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        default = await client.post("/v1/tts/stream", json={"text": "d"})
        override = await client.post("/v1/tts/stream", json={"text": "d", "chunks": 3})
    assert audio_of(parse_frames(default.content)) == expected_stream(
        "d", None, {"chunks": 2, "seed": 3}
    )
    assert audio_of(parse_frames(override.content)) == expected_stream(
        "d", None, {"chunks": 3, "seed": 3}
    )
