"""``orpheus-trio gateway`` as a real process, and the failure-to-status mapping."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import httpx
import pybase64
import pytest
import trio
from _support_gateway import start_worker

from orpheus_trio import OrpheusTTS
from orpheus_trio.errors import CircuitOpenError, HTTPStatusError, ServiceError
from orpheus_trio.server import ServerConfig
from orpheus_trio.server.engines.synthetic import expected_stream
from orpheus_trio.server.gateway.service import Gateway, upstream_error


async def test_gateway_command_forwards_with_its_own_keys_and_drains_on_sigterm(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery, api_keys=("worker-key",))
    process = await trio.lowlevel.open_process(
        [
            sys.executable, "-m", "orpheus_trio", "gateway", "--port", "0",
            "--upstream", worker.base_url, "--api-key", "app-key",
            "--max-concurrency", "2", "--hedge-ttfb-ms", "0",
        ],
        stderr=subprocess.PIPE,
        env={"ORPHEUS_UPSTREAM_API_KEY": "worker-key", "PATH": ""},
    )  # fmt: skip
    assert process.stderr is not None
    seen = b""
    try:
        with trio.fail_after(20):
            while (
                match := re.search(rb"upstreams on (http://[0-9.:]+)", seen)
            ) is None:
                data = await process.stderr.receive_some()
                assert data, f"gateway exited early: {seen.decode()}"
                seen += data
        base_url = match.group(1).decode()
        params = {"chunks": 4, "chunk_samples": 2400, "rtf": 1.0}
        async with (
            httpx.AsyncClient(base_url=base_url) as client,
            client.stream(
                "POST",
                "/v1/tts/stream",
                json={"text": "via the command", **params},
                headers={"X-API-Key": "app-key"},
            ) as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert json.loads(await lines.__anext__())["type"] == "metrics"
            process.send_signal(signal.SIGTERM)  # drains: this stream still ends
            frames = [json.loads(line) async for line in lines if line]
        chunks = [f for f in frames if f["type"] == "chunk"]
        assert len(chunks) == 4 and frames[-1]["type"] == "eos"
        pcm = [pybase64.b64decode(f["audio"]) for f in chunks]
        assert pcm == expected_stream("via the command", None, params)
        with trio.fail_after(10):
            assert await process.wait() == 0
        rest = await process.stderr.receive_some()
        logged = seen + (rest or b"")
        assert b"worker-key" not in logged and b"app-key" not in logged
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_gateway_command_rejects_bad_upstreams_as_usage_errors() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "orpheus_trio", "gateway", "--upstream", "ftp://x"],
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"endpoint URL must be http(s)" in result.stderr


def _status_error(
    status: int, code: str, retry_after_s: float | None = None
) -> HTTPStatusError:
    request = httpx.Request("POST", "http://w/v1/tts/stream")
    return HTTPStatusError(
        status_code=status,
        code=code,
        message="why",
        request=request,
        response=httpx.Response(status, request=request),
        retry_after_s=retry_after_s,
    )


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (_status_error(400, "invalid_param"), 400, "invalid_param"),
        (_status_error(413, "text_too_long"), 413, "text_too_long"),
        # The gateway's own key or URL was refused: not the caller's fault.
        (_status_error(401, "unauthorized"), 502, "upstream_error"),
        (_status_error(404, "not_found"), 502, "upstream_error"),
        (_status_error(429, "overloaded", float("inf")), 429, "overloaded"),
        (_status_error(429, "overloaded", 2.0), 429, "overloaded"),
        (_status_error(503, "draining"), 503, "unavailable"),
        (_status_error(500, "internal"), 502, "upstream_error"),
        (CircuitOpenError(["http://w"], retry_in_s=4.0), 503, "unavailable"),
        (httpx.ConnectError("refused"), 503, "unavailable"),
        (httpx.PoolTimeout("our pool is full"), 503, "unavailable"),
        (httpx.ReadTimeout("silent"), 504, "upstream_error"),
        (httpx.ReadError("reset"), 502, "upstream_error"),
        (httpx.RemoteProtocolError("cut"), 502, "upstream_error"),
        (ServiceError("engine_error", "boom"), None, "engine_error"),
    ],
)
def test_failures_before_audio_map_to_statuses(
    error: Exception, status: int | None, code: str
) -> None:
    mapped = upstream_error(error, streaming=False)
    assert (mapped.status, mapped.code) == (status, code)
    if isinstance(error, CircuitOpenError):
        assert mapped.retry_after_s == 4.0
    if isinstance(error, HTTPStatusError) and status == 429:
        # A non-finite Retry-After is no advice at all: none is passed on.
        sane = error.retry_after_s == 2.0
        assert mapped.retry_after_s == (2.0 if sane else None)


def test_failures_after_audio_are_in_band() -> None:
    for error in (httpx.ReadError("gone"), _status_error(500, "internal")):
        mapped = upstream_error(error, streaming=True)
        assert (mapped.status, mapped.code) == (None, "engine_error")


@pytest.mark.parametrize(
    ("upstreams", "message"),
    [
        ([], "at least one"),
        (["http://127.0.0.1:notaport"], "port"),
        (["http://127.0.0.1:99999"], "port"),
        (["http://:8000"], "host"),
        (["http://127.0.0.1 :8000"], "host"),
        (["http://127.0.0.1:8000", "HTTP://127.0.0.1:8000/"], "twice"),
        (["http://LocalHost:8000", "http://localhost:8000"], "twice"),
        (["http://127.0.0.1", "http://127.0.0.1:80"], "twice"),
        (["https://127.0.0.1", "https://127.0.0.1:443/"], "twice"),
    ],
)
def test_bad_upstream_urls_are_refused_when_the_gateway_is_made(
    upstreams: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Gateway(upstreams, ServerConfig(port=0))


async def test_gateway_command_names_a_bad_upstream_port_without_a_traceback() -> None:
    result = await trio.run_process(
        [
            sys.executable, "-m", "orpheus_trio", "gateway", "--port", "0",
            "--upstream", "http://127.0.0.1:notaport",
        ],
        capture_stderr=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr
    assert b"notaport" in result.stderr


async def test_a_stream_restricted_to_unknown_endpoints_is_refused() -> None:
    async with OrpheusTTS(["http://127.0.0.1:1", "http://127.0.0.1:2"]) as tts:
        for endpoints in ([], ["http://127.0.0.1:3"]):
            with pytest.raises(ValueError, match="subset of base_urls"):
                async with tts.open_stream("x", endpoints=endpoints):
                    pass


async def test_gateway_command_names_the_upstream_key_it_refuses() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "orpheus_trio", "gateway", "--port", "0",
         "--upstream", "http://127.0.0.1:9", "--upstream-api-key", "bad key\u00e9"],
        capture_stderr=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"upstream_api_key may contain only visible ASCII" in result.stderr
    assert b"bad key" not in result.stderr
