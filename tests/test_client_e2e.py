"""OrpheusTTS against the reference server's synthetic engine: real sockets on 127.0.0.1, every byte checked."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
import trio
from _support_server import StartServer

from orpheus_trio import (
    DeadlineExceeded,
    HTTPStatusError,
    Hedging,
    IncompleteStreamError,
    OrpheusTTS,
    ServiceError,
)
from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream

TEXT = "Hello from the synthetic engine."
PARAMS: dict[str, Any] = {"chunk_samples": 480, "seed": 1}


async def workers(
    start_server: StartServer, n: int, **engine_defaults: Any
) -> list[str]:
    return [
        (await start_server(SyntheticEngine(defaults=engine_defaults))).base_url
        for _ in range(n)
    ]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_every_byte_from_several_workers_concurrently(
    start_server: StartServer,
) -> None:
    urls = await workers(start_server, 3)
    expected = {i: expected_stream(f"{TEXT} {i}", "leo", PARAMS) for i in range(24)}
    got: dict[int, list[bytes]] = {}
    async with OrpheusTTS(urls) as tts:

        async def one(i: int) -> None:
            got[i] = [pcm async for pcm in tts.stream(f"{TEXT} {i}", "leo", **PARAMS)]

        async with trio.open_nursery() as nursery:
            for i in range(24):
                nursery.start_soon(one, i)
        snapshots = tts.endpoints()
    for i in range(24):
        assert b"".join(got[i]) == b"".join(expected[i])
        assert all(len(c) % 2 == 0 for c in got[i])
    assert sum(s.wins for s in snapshots) == 24
    assert all(s.attempts > 0 for s in snapshots)  # load spread over every worker
    assert all(s.in_flight == 0 and s.latency_estimate_s is not None for s in snapshots)


async def test_hedge_beats_slow_worker_with_identical_bytes(
    start_server: StartServer,
) -> None:
    slow = await start_server(SyntheticEngine(defaults={"ttfb_ms": 3000}))
    fast = await start_server(SyntheticEngine())
    async with OrpheusTTS([slow.base_url, fast.base_url], hedge_ttfb_ms=100) as tts:
        # Within three requests the slow worker is tried (a cold idle endpoint goes first) and hedged.
        for _ in range(3):
            t0 = trio.current_time()
            async with tts.open_stream(TEXT, **PARAMS) as audio:
                pcm = b"".join([c async for c in audio])
                assert audio.endpoint == fast.base_url
            assert pcm == b"".join(expected_stream(TEXT, None, PARAMS))
            assert trio.current_time() - t0 < 2.0
    with trio.fail_after(5):
        while slow.engine.requests_cancelled < 1:  # type: ignore[attr-defined]
            await trio.sleep(0.01)  # the loser's server saw its request cancelled


async def test_failover_from_dead_endpoint(start_server: StartServer) -> None:
    (good,) = await workers(start_server, 1)
    async with OrpheusTTS([closed_port_url(), good], hedge_ttfb_ms=None) as tts:
        for _ in range(3):
            assert await tts.synthesize(TEXT, **PARAMS) == b"".join(
                expected_stream(TEXT, None, PARAMS)
            )


async def test_unreachable_only_endpoint_raises_connect_error() -> None:
    async with OrpheusTTS(closed_port_url(), hedging=Hedging(max_attempts=2)) as tts:
        with pytest.raises(httpx.ConnectError):
            await tts.synthesize(TEXT)


async def test_invalid_param_raises_without_failover(start_server: StartServer) -> None:
    urls = await workers(start_server, 2)
    async with OrpheusTTS(urls) as tts:
        with pytest.raises(HTTPStatusError) as caught:
            await tts.synthesize(TEXT, temperature="hot")
        assert caught.value.status_code == 400 and caught.value.code == "invalid_param"
        assert sum(s.attempts for s in tts.endpoints()) == 1


async def test_auth(start_server: StartServer) -> None:
    server = await start_server(api_keys=("k1",))
    async with OrpheusTTS(server.base_url, "k1") as tts:
        assert await tts.synthesize(TEXT, **PARAMS) == b"".join(
            expected_stream(TEXT, None, PARAMS)
        )
    async with OrpheusTTS(server.base_url, "wrong") as tts:
        with pytest.raises(HTTPStatusError) as caught:
            await tts.synthesize(TEXT)
        assert caught.value.status_code == 401 and "wrong" not in str(caught.value)


async def test_cut_connection_after_audio_raises_incomplete(
    start_server: StartServer,
) -> None:
    (url,) = await workers(start_server, 1)
    expected = expected_stream(TEXT, None, PARAMS)
    got = []
    async with OrpheusTTS(url) as tts:
        with pytest.raises(IncompleteStreamError):
            async for pcm in tts.stream(TEXT, cut_after=2, **PARAMS):
                got.append(pcm)
    assert b"".join(got) == b"".join(expected[:2])


async def test_in_band_error_after_audio(start_server: StartServer) -> None:
    (url,) = await workers(start_server, 1)
    async with OrpheusTTS(url) as tts:
        with pytest.raises(ServiceError) as caught:
            await tts.synthesize(TEXT, error_after=1, **PARAMS)
    assert caught.value.code == "engine_error"


async def test_client_deadline_mid_stream(start_server: StartServer) -> None:
    (url,) = await workers(start_server, 1)
    async with OrpheusTTS(url) as tts:
        t0 = trio.current_time()
        with pytest.raises(DeadlineExceeded):
            await tts.synthesize(
                TEXT, timeout_s=0.3, stall_s=5, stall_after=1, **PARAMS
            )
        assert trio.current_time() - t0 < 1.5
