"""``orpheus-trio serve`` as a real process: port 0, serving, draining on SIGTERM/SIGINT."""

from __future__ import annotations

import errno
import json
import re
import signal
import socket
import subprocess
import sys

import httpx
import pytest
import trio

from orpheus_trio.server import ServerConfig, serve
from orpheus_trio.server.engines.synthetic import SyntheticEngine


async def start_cli(*args: str) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "orpheus_trio", "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(20):
        while (match := re.search(rb"engine on (http://[0-9.:]+)", seen)) is None:
            data = await process.stderr.receive_some()
            assert data, f"server exited early: {seen.decode()}"
            seen += data
    return process, match.group(1).decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_in_flight_streams_then_exits_cleanly(signum: int) -> None:
    process, base_url = await start_cli("--engine", "synthetic", "--drain-grace-s", "5")
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            body = {"text": "drain", "chunks": 4, "chunk_samples": 2400, "rtf": 1.0}
            async with client.stream("POST", "/v1/tts/stream", json=body) as response:
                lines = response.aiter_lines()
                assert json.loads(await lines.__anext__())["type"] == "metrics"
                process.send_signal(signum)
                rest = [json.loads(line) async for line in lines if line]
        assert rest[-1] == {"type": "eos", "chunks": 4, "samples": 9600}
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-concurrency", "0"], b"max_concurrency must be > 0"),
        (["--http-server", "builtin"], b"unrecognized arguments: --http-server"),
        (["--max-head-waits-per-client", "-1"], b"must be >= 0"),
    ],
)
async def test_bad_settings_exit_with_usage_error(flags: list[str], message: bytes) -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "orpheus_trio", "serve", *flags],
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


def _listening_port() -> tuple[socket.socket, int]:
    """A socket holding a port on 127.0.0.1 (port 0 picked), so binding it again fails."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


async def test_serve_raises_the_bind_error_itself_not_a_group() -> None:
    holder, port = _listening_port()
    with holder, pytest.raises(OSError) as info:
        await serve(SyntheticEngine(), ServerConfig(host="127.0.0.1", port=port))
    assert info.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("command", ["serve", "gateway"])
async def test_a_port_in_use_is_one_line_and_exit_1(command: str) -> None:
    holder, port = _listening_port()
    extra = ["--engine", "synthetic"] if command == "serve" else ["--upstream", "http://127.0.0.1:9"]
    with holder:
        result = await trio.run_process(
            [sys.executable, "-m", "orpheus_trio", command, "--port", str(port), *extra],
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert b"in use" in result.stderr
