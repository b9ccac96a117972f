"""Helpers for server tests (and others that start a server): frame parsing, types."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
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


class ThreadedServer:
    """The reference server under ``trio.run`` on a thread of its own (port 0)."""

    def __init__(self, engine: Engine, settings: dict[str, Any]) -> None:
        self._engine = engine
        self._config = ServerConfig(**{"host": "127.0.0.1", "port": 0, **settings})
        self._url: queue.Queue[str | BaseException] = queue.Queue()
        self._token: trio.lowlevel.TrioToken | None = None
        self._drain: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="orpheus test server", daemon=True)

    def start(self) -> str:
        self._thread.start()
        url = self._url.get(timeout=30)
        if isinstance(url, BaseException):
            raise url
        return url

    def _run(self) -> None:
        from orpheus_trio.server import create_app, serve_app

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._drain = trio.Event()
            app = create_app(self._engine, self._config)
            async with trio.open_nursery() as nursery:
                url = await nursery.start(
                    partial(serve_app, app, self._config, drain=self._drain)
                )
                self._url.put(url)

        try:
            trio.run(main)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            self._url.put(error)

    def stop(self) -> None:
        if self._token is not None and self._drain is not None:
            try:
                trio.from_thread.run_sync(self._drain.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout=30)
