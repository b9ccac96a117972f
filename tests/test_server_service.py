"""/v1/system, /metrics and the one structured log line per request."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import trio
from _support_server import StartServer
from prometheus_client.parser import text_string_to_metric_families

from orpheus_trio.server.access_log import ACCESS_LOGGER


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_system_reports_the_contract_fields(start_server: StartServer) -> None:
    server = await start_server(
        max_concurrency=3, max_text_chars=500, default_timeout_s=30
    )
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.get("/v1/system")
    info = response.json()
    assert response.headers["content-type"] == "application/json"
    expected = {
        "api": "v1",
        "server": "orpheus-trio",
        "engine": "synthetic",
        "sample_rate": 24000,
        "channels": 1,
        "sample_format": "s16le",
        "voices": ["tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"],
        "emotion_tags": [],  # synthetic tones perform no tags
        "queue_depth": 0,
        "inflight": 0,
        "capacity": 3,
        "max_text_chars": 500,
        "default_timeout_s": 30,
    }
    assert {key: info[key] for key in expected} == expected


async def test_metrics_count_requests_audio_and_errors(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for _ in range(2):
            await client.post(
                "/v1/tts/stream", json={"text": "m", "chunks": 3, "chunk_samples": 2400}
            )
        await client.post("/v1/tts/stream", json={"text": "m", "bogus": 1})
        await client.post(
            "/v1/tts/stream",
            json={"text": "m", "chunks": 2, "chunk_samples": 2400, "error_after": 1},
        )
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert values[("orpheus_requests_total", (("status", "200"),))] == 3
    assert values[("orpheus_requests_total", (("status", "400"),))] == 1
    assert values[("orpheus_errors_total", (("code", "invalid_param"),))] == 1
    assert values[("orpheus_errors_total", (("code", "engine_error"),))] == 1
    # 2 x 3 x 0.1 s + 1 x 2400 samples of the failed one = 0.7 s.
    assert values[("orpheus_audio_seconds_total", ())] == pytest.approx(0.7)
    assert values[("orpheus_time_to_first_audio_seconds_count", ())] == 3
    assert values[("orpheus_inflight", ())] == 0
    assert values[("orpheus_queue_depth", ())] == 0
    assert values[("orpheus_capacity", ())] == server.config.max_concurrency


async def test_two_servers_in_one_process_keep_separate_metrics(
    start_server: StartServer,
) -> None:
    busy, idle = await start_server(), await start_server()
    async with httpx.AsyncClient() as client:
        await client.post(
            busy.base_url + "/v1/tts/stream", json={"text": "x", "chunks": 1}
        )
        idle_metrics = samples((await client.get(idle.base_url + "/metrics")).text)
    assert ("orpheus_requests_total", (("status", "200"),)) not in idle_metrics


async def test_routine_service_requests_log_at_debug_and_their_failures_at_info(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A gateway polls each worker's /v1/system every few seconds: at INFO those
    # lines would bury the synthesis requests.
    server = await start_server(api_keys=("k",), protect_service_endpoints=True)
    caplog.set_level(logging.DEBUG, logger=ACCESS_LOGGER)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        for path, key in [("/v1/system", "k"), ("/metrics", "k"), ("/v1/system", "bad")]:
            await client.get(path, headers={"X-API-Key": key})
    with trio.fail_after(2):
        while len([r for r in caplog.records if r.name == ACCESS_LOGGER]) < 3:
            await trio.sleep(0.01)
    levels = {
        (record["path"], record["status"]): r.levelno
        for r in caplog.records
        if r.name == ACCESS_LOGGER and (record := getattr(r, "request"))
    }
    assert levels == {
        ("/v1/system", 200): logging.DEBUG,
        ("/metrics", 200): logging.DEBUG,
        ("/v1/system", 401): logging.INFO,
    }


async def test_one_structured_log_line_per_request_without_the_key(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(api_keys=("s3cret-key",))
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        await client.post(
            "/v1/tts/stream",
            json={"text": "log me", "chunks": 2, "chunk_samples": 2400},
            headers={"Authorization": "Bearer s3cret-key", "X-Request-Id": "log-1"},
        )
        await client.post(
            "/v1/tts/stream",
            json={"text": "x"},
            headers={"X-API-Key": "s3cret-key-wrong", "X-Request-Id": "log-2"},
        )
    # The line is written once the response has ended, which may be just after the client returns.
    with trio.fail_after(2):
        while (
            len(records := [r for r in caplog.records if r.name == ACCESS_LOGGER]) < 2
        ):
            await trio.sleep(0.01)
    await trio.sleep(0.05)
    assert len([r for r in caplog.records if r.name == ACCESS_LOGGER]) == 2
    ok, denied = (json.loads(r.getMessage().removeprefix("request ")) for r in records)
    assert ok["request_id"] == "log-1" and ok["status"] == 200
    assert ok["audio_s"] == pytest.approx(0.2) and ok["chunks"] == 2
    assert ok["ttfa_ms"] is not None and ok["duration_ms"] >= ok["ttfa_ms"]
    assert denied["request_id"] == "log-2" and denied["status"] == 401
    assert denied["code"] == "unauthorized"
    assert "s3cret" not in caplog.text
