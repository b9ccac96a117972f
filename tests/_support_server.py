"""Helpers for server tests (and others that start a server): frame parsing, types."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pybase64
import trio

from orpheus_trio.server import Engine, OrpheusApp, ServerConfig


@dataclass
class RunningServer:
    """A server started by the ``start_server`` fixture."""

    base_url: str
    app: OrpheusApp
    engine: Engine
    config: ServerConfig
    drain: trio.Event = field(default_factory=trio.Event)
    #: Set once ``serve`` has returned (after draining).
    stopped: trio.Event = field(default_factory=trio.Event)


StartServer = Callable[..., Awaitable[RunningServer]]


def parse_frames(body: bytes) -> list[dict[str, Any]]:
    """Every NDJSON frame of a response body, as dicts."""
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def audio_of(frames: list[dict[str, Any]]) -> list[bytes]:
    """The PCM of every chunk frame, in order."""
    return [pybase64.b64decode(f["audio"]) for f in frames if f["type"] == "chunk"]


async def raw_exchange(
    base_url: str, request: bytes, *, read_for_s: float = 5.0
) -> tuple[bytes, bool]:
    """Send raw bytes, read until the server closes or ``read_for_s`` passes.

    Returns what was read and whether the server closed the connection.
    """
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    received = bytearray()
    closed = False
    async with stream:
        await stream.send_all(request)
        with trio.move_on_after(read_for_s):
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    closed = True
                    break
                received += data
    return bytes(received), closed


def json_of_raw_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of a raw HTTP/1.1 response with Content-Length."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return status, headers, json.loads(body[:length]) if length else None
