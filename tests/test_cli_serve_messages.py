"""``serve``'s own words: a port in use names the address; ``--help`` says the default engine."""

from __future__ import annotations

import socket
import sys

import trio


async def test_a_port_in_use_names_host_and_port() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = await trio.run_process(
            [sys.executable, "-m", "orpheus_trio", "serve", "--engine", "synthetic",
             "--host", "127.0.0.1", "--port", str(port)],
            capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert result.returncode == 1
    lines = [line for line in result.stderr.decode().splitlines() if "error" in line]
    assert lines == [f"orpheus-trio serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"]


async def test_serve_help_says_the_default_engine() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "orpheus_trio", "serve", "--help"], capture_stdout=True
    )
    help_text = " ".join(result.stdout.decode().split())
    assert "default: espeak" in help_text
