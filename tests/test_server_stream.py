"""End to end: synthesis over 127.0.0.1 with a plain HTTP client, frames checked byte by byte."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio.testing
from _support_memory import memory_server
from _support_server import StartServer, audio_of, parse_frames

from orpheus_trio.errors import ProtocolError
from orpheus_trio.protocol.frames import Chunk, EndOfStream, ErrorFrame, FrameDecoder
from orpheus_trio.server.engines.synthetic import (
    MALFORMED_LINE,
    ScheduledFault,
    SyntheticEngine,
    expected_stream,
)


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
            # (A control character such as DEL never reaches the app: its head is a 400.)
            headers={"X-Request-Id": "a b<x>"},
        )
    assert len(plain.headers["x-request-id"]) == 32
    assert unsafe.headers["x-request-id"] != "a b<x>"


async def test_paced_stream_takes_rtf_times_audio_duration(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = memory_server(nursery)
    params = {
        "chunks": 6,
        "chunk_samples": 2400,
        "rtf": 0.5,
        "ttfb_ms": 50,
    }  # 0.1 s of audio per chunk, made in 0.05 s
    answer = await server.post("/v1/tts/stream", {"text": "pace", **params})
    frames = answer.timed_frames()
    assert audio_of([frame for _, frame in frames]) == expected_stream("pace", None, params)
    # ttfb 0.05 s, then one chunk every 0.05 s: the last at 0.3 s, and eos with it.
    chunk_times = [at for at, frame in frames if frame["type"] == "chunk"]
    assert chunk_times == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.25, 0.3], abs=1e-9)
    assert answer.ended_at == pytest.approx(0.3, abs=1e-9)


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


async def test_cut_after_drops_the_connection_without_a_closing_frame(
    start_server: StartServer,
) -> None:
    server = await start_server()
    received = bytearray()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            async with client.stream(
                "POST",
                "/v1/tts/stream",
                json={"text": "cut", "chunks": 5, "cut_after": 2},
            ) as response:
                assert response.status_code == 200
                async for data in response.aiter_raw():
                    received += data
    frames = parse_frames(bytes(received))
    assert [f["type"] for f in frames] == ["metrics", "chunk", "chunk"]
    assert audio_of(frames) == expected_stream("cut", None, {"chunks": 5})[:2]


async def test_malformed_after_writes_a_non_json_line_then_continues(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream", json={"text": "m", "chunks": 3, "malformed_after": 1}
        )
    lines = response.content.splitlines()
    bad = [line for line in lines if not _is_json(line)]
    assert bad == [MALFORMED_LINE.rstrip(b"\n")]
    # The bad line sits after the first chunk.
    assert json.loads(lines[1])["seq"] == 0 and lines[2] == bad[0]


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


async def test_error_after_ends_with_in_band_error_frame(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream",
            json={
                "text": "e",
                "chunks": 4,
                "error_after": 2,
                "error_code": "engine_error",
            },
        )
        at_start = await client.post(
            "/v1/tts/stream", json={"text": "e", "error_after": 0}
        )
    assert response.status_code == 200
    frames = parse_frames(response.content)
    assert [f["type"] for f in frames] == ["metrics", "chunk", "chunk", "error"]
    assert frames[-1]["code"] == "engine_error"
    assert at_start.status_code == 200
    assert [f["type"] for f in parse_frames(at_start.content)] == ["metrics", "error"]


async def test_fail_status_answers_before_streaming_with_json_error(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        unavailable = await client.post(
            "/v1/tts/stream", json={"text": "f", "fail_status": 503, "retry_after_s": 2}
        )
        internal = await client.post(
            "/v1/tts/stream",
            json={"text": "f", "fail_status": 500, "fail_code": "boom"},
        )
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["code"] == "unavailable"
    assert unavailable.headers["retry-after"] == "2"
    assert internal.status_code == 500
    assert internal.json() == {
        "error": {"code": "boom", "message": "scripted failure (500)"}
    }


async def test_stall_delays_the_chunks_after_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = memory_server(nursery)
    answer = await server.post(
        "/v1/tts/stream", {"text": "s", "chunks": 3, "stall_s": 0.4, "stall_after": 1}
    )
    arrivals = [at for at, frame in answer.timed_frames() if frame["type"] == "chunk"]
    assert arrivals == [0.0, 0.4, 0.4]


async def test_every_nth_request_gets_the_scheduled_fault(
    start_server: StartServer,
) -> None:
    engine = SyntheticEngine(faults=[ScheduledFault({"fail_status": 503}, every=3)])
    server = await start_server(engine)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        statuses = [
            (
                await client.post("/v1/tts/stream", json={"text": "n", "chunks": 1})
            ).status_code
            for _ in range(6)
        ]
    assert statuses == [200, 200, 503, 200, 200, 503]


async def test_overrun_ignores_the_deadline(start_server: StartServer) -> None:
    server = await start_server()
    params = {"chunks": 4, "chunk_samples": 2400, "rtf": 1.0, "overrun": True}  # 0.3 s
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream", json={"text": "o", "timeout_s": 0.1, **params}
        )
    frames = parse_frames(response.content)
    assert frames[-1]["type"] == "eos"
    assert audio_of(frames) == expected_stream("o", None, params)


async def test_the_library_frame_decoder_accepts_every_stream_shape(
    start_server: StartServer,
) -> None:
    """The server's output is what the client's decoder expects, eos checks included."""
    server = await start_server()
    params = {"chunks": 7, "chunk_samples": 1000}
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        ok = await client.post("/v1/tts/stream", json={"text": "dec", **params})
        failed = await client.post(
            "/v1/tts/stream", json={"text": "dec", "chunks": 3, "error_after": 2}
        )
        malformed = await client.post(
            "/v1/tts/stream", json={"text": "dec", "chunks": 3, "malformed_after": 1}
        )
    decoder = FrameDecoder()
    frames = decoder.feed(ok.content)
    decoder.close()
    assert [f.pcm for f in frames if isinstance(f, Chunk)] == expected_stream(
        "dec", None, params
    )
    assert frames[-1] == EndOfStream(chunks=7, samples=7000)
    decoder = FrameDecoder()
    assert isinstance(decoder.feed(failed.content)[-1], ErrorFrame)
    decoder.close()
    decoder = FrameDecoder()
    # The chunk before the malformed line is delivered; the next call raises.
    frames = decoder.feed(malformed.content)
    assert [f.seq for f in frames if isinstance(f, Chunk)] == [0]
    with pytest.raises(ProtocolError) as error:
        decoder.close()
    assert error.value.line == 3
