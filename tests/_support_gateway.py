"""Helpers for gateway tests: workers that can be killed, a gateway, a recording engine."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from orpheus_trio import Hedging
from orpheus_trio.server import Engine, OrpheusApp, ServerConfig, create_app, serve_app
from orpheus_trio.server.engine import CURRENT_REQUEST, Hints, InvalidParam, Piece
from orpheus_trio.server.engines.synthetic import SyntheticEngine
from orpheus_trio.server.gateway.service import Gateway
from orpheus_trio.voices import VoiceCatalog, catalog_for


@dataclass
class Worker:
    """A worker started by :func:`start_worker`; ``kill`` stops it without draining."""

    base_url: str
    app: OrpheusApp
    engine: SyntheticEngine
    scope: trio.CancelScope
    stopped: trio.Event

    async def kill(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


@dataclass
class RecordingEngine(SyntheticEngine):
    """A synthetic engine that records each request's id and parameters, may
    offer other voices, and may send routing hints before its audio."""

    offered: Sequence[str] | None = None
    hints: Mapping[str, Any] | None = None
    seen: list[tuple[str | None, dict[str, Any]]] = field(
        default_factory=list, init=False
    )

    def voices(self) -> list[str]:
        return list(self.offered) if self.offered is not None else super().voices()

    def catalog(self) -> VoiceCatalog:
        if self.offered is None:
            return super().catalog()
        return catalog_for("en-ft", voices=self.offered)

    def validate(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        if voice is not None and voice not in self.voices():  # as a real worker would
            raise InvalidParam("voice", f"unknown voice {voice!r}")
        return super().validate(voice, params)

    def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        request = CURRENT_REQUEST.get()
        assert request is not None
        self.seen.append((request.request_id, dict(params)))
        pieces = super().synthesize(text, voice, params)
        return pieces if self.hints is None else self._hinted(self.hints, pieces)

    @staticmethod
    async def _hinted(
        hints: Mapping[str, Any], pieces: AsyncGenerator[Piece, None]
    ) -> AsyncGenerator[Piece, None]:
        yield Hints(hints)
        async with aclosing(pieces):
            async for piece in pieces:
                yield piece


async def start_worker(
    nursery: trio.Nursery, engine: SyntheticEngine | None = None, **settings: Any
) -> Worker:
    engine = engine if engine is not None else RecordingEngine()
    config = ServerConfig(**{"host": "127.0.0.1", "port": 0, **settings})
    app = create_app(engine, config)
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await serve_app(app, config, task_status=task_status)
        finally:
            stopped.set()

    base_url: str = await nursery.start(run)
    return Worker(base_url, app, engine, scope, stopped)


@dataclass
class RunningGateway:
    base_url: str
    gateway: Gateway
    drain: trio.Event
    stopped: trio.Event

    @property
    def app(self) -> OrpheusApp:
        return self.gateway.app


async def start_gateway(
    nursery: trio.Nursery,
    upstreams: Sequence[str],
    *,
    hedge_ttfb_ms: float | None = 400,
    upstream_api_key: str | None = None,
    health_interval_s: float = 0.2,
    health_timeout_s: float = 2.0,
    client: dict[str, Any] | None = None,
    **settings: Any,
) -> RunningGateway:
    """A gateway on port 0; the client's options default to a seeded rng and a
    budget that never runs out, so tests are deterministic."""
    config = ServerConfig(**{"host": "127.0.0.1", "port": 0, **settings})
    options: dict[str, Any] = {"rng": random.Random(7), "hedging": Hedging(budget_min=1000)}
    options.update(client or {})
    gateway = Gateway(
        upstreams,
        config,
        upstream_api_key=upstream_api_key,
        hedge_ttfb_ms=hedge_ttfb_ms,
        health_interval_s=health_interval_s,
        health_timeout_s=health_timeout_s,
        **options,
    )
    drain, stopped = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await gateway.serve(drain=drain, task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                await gateway.aclose()
            stopped.set()

    base_url: str = await nursery.start(run)
    return RunningGateway(base_url, gateway, drain, stopped)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout_s``)."""
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.005)


async def post_tts(
    base_url: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    """POST ``body`` to ``/v1/tts/stream`` and read the whole answer."""
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            base_url + "/v1/tts/stream",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **headers},
        )


def engine_of(worker: Worker) -> RecordingEngine:
    engine: Engine = worker.engine
    assert isinstance(engine, RecordingEngine)
    return engine


#: What a scripted worker answers to ``GET /v1/system``.
SYSTEM_ANSWER = {"api": "v1", "engine": "scripted", "voices": ["tara"], "capacity": 4}


async def read_request_head(stream: trio.SocketStream) -> bytes | None:
    """Bytes up to the end of a request's head; ``None`` if the peer left first."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(65536)
        if not data:
            return None
        head += data
    return head


async def start_scripted_worker(
    nursery: trio.Nursery,
    stream_answer: bytes,
    *,
    system_answer: bytes | None = None,
) -> str:
    """A raw-socket worker: answers ``/v1/system`` with :data:`SYSTEM_ANSWER` (or
    ``system_answer`` verbatim) and every POST with ``stream_answer`` verbatim,
    then closes. For answers no real worker gives (bad headers, odd hints)."""
    body = json.dumps(SYSTEM_ANSWER).encode()
    system = system_answer or (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            head = await read_request_head(stream)
            if head is None:
                return
            try:
                await stream.send_all(
                    system if head.startswith(b"GET /v1/system") else stream_answer
                )
            except trio.BrokenResourceError:
                pass

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def ndjson_answer(frames: Sequence[dict[str, Any]], **headers: str) -> bytes:
    """A whole 200 streaming answer (Content-Length framed) with extra headers."""
    body = b"".join(json.dumps(frame).encode() + b"\n" for frame in frames)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
        + head.encode()
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


def error_answer(status: int, code: str, **headers: str) -> bytes:
    """A JSON error answer with extra headers."""
    body = json.dumps({"error": {"code": code, "message": "scripted"}}).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        b"HTTP/1.1 %d Scripted\r\ncontent-type: application/json\r\n" % status
        + head.encode()
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )
