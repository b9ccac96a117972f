"""``orpheus-trio gateway`` says what it sees at start (issue 31, 4): each
worker's first poll, a warning when none is reachable, and a concurrency
limit sized to its workers' capacity unless ``--max-concurrency`` is given."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import trio
from _support_cli import clean_env
from _support_gateway import RecordingEngine, post_tts, start_worker
from test_client_e2e import closed_port_url


async def _start_lines(*args: str) -> tuple[str, str, trio.Process]:
    """Start the command; return its stderr up to the serving line, its URL and the process."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "orpheus_trio", "gateway", "--port", "0", *args],
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(20):
        while (match := re.search(rb"upstreams on (http://[0-9.:]+)", seen)) is None:
            data = await process.stderr.receive_some()
            if not data:
                process.kill()
                raise AssertionError(f"the gateway exited early: {seen.decode()}")
            seen += data
    return seen.decode(), match.group(1).decode(), process


async def _stop(process: trio.Process) -> None:
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        assert await process.wait() == 0


async def test_the_gateway_reports_each_upstreams_first_poll_and_sizes_itself(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(
        nursery, RecordingEngine(offered=["leo", "tara"]), max_concurrency=8
    )
    down = closed_port_url()
    lines, base_url, process = await _start_lines(
        "--upstream", worker.base_url, "--upstream", down
    )
    try:
        prefix = "orpheus-trio gateway: "
        assert (
            f"{prefix}upstream {worker.base_url}: reachable, engine synthetic, "
            "capacity 8, voices (2): leo, tara\n" in lines
        )
        assert re.search(
            f"{prefix}upstream {down}: NOT reachable \\(connect_failed: ConnectError: "
            ".+Connection refused\\)\\)\n",
            lines,
        )
        assert "no upstream is reachable" not in lines
        # Not the fixed default 4 below the worker's 8: sized to what answered.
        assert f"{prefix}max concurrency 8 (the reachable upstreams' capacity)\n" in lines
        async with httpx.AsyncClient() as http:
            system = (await http.get(base_url + "/v1/system")).json()
        assert system["capacity"] == 8 and system["upstream_capacity"] == 8
        assert system["voices"] == ["leo", "tara"]  # the worker's order: leo is its default
        assert (await post_tts(base_url, {"text": "hi"})).status_code == 200
    finally:
        await _stop(process)


async def test_the_gateway_warns_when_no_upstream_is_reachable() -> None:
    down = closed_port_url()
    lines, base_url, process = await _start_lines(
        "--upstream", down, "--health-interval-s", "5"
    )
    try:
        assert (
            "orpheus-trio gateway: warning: no upstream is reachable; requests are "
            "answered 503 unavailable until one answers its /v1/system (polled every 5 s)"
            in lines
        )
        assert "max concurrency 4 (the default: no upstream reported its capacity)" in lines
        response = await post_tts(base_url, {"text": "hi"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
    finally:
        await _stop(process)


async def test_an_explicit_max_concurrency_is_kept(nursery: trio.Nursery) -> None:
    worker = await start_worker(nursery, max_concurrency=8)
    lines, base_url, process = await _start_lines(
        "--upstream", worker.base_url, "--max-concurrency", "3"
    )
    try:
        assert "orpheus-trio gateway: max concurrency 3 (--max-concurrency)\n" in lines
        async with httpx.AsyncClient() as http:
            assert (await http.get(base_url + "/v1/system")).json()["capacity"] == 3
    finally:
        await _stop(process)
