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
