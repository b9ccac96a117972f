"""Shared fixtures: a reference server on 127.0.0.1, port 0, per test."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _support_server import RunningServer, StartServer

from orpheus_trio.server import Engine, ServerConfig, create_app, serve_app
from orpheus_trio.server.engines.synthetic import SyntheticEngine


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> StartServer:
    """``await start_server(engine=None, **ServerConfig fields)``: a running server.

    The engine defaults to a fresh :class:`SyntheticEngine`; the server stops
    when the test ends.
    """

    async def start(engine: Engine | None = None, **settings: Any) -> RunningServer:
        engine = engine if engine is not None else SyntheticEngine()
        config = ServerConfig(**{"host": "127.0.0.1", "port": 0, **settings})
        app = create_app(engine, config)
        drain, stopped = trio.Event(), trio.Event()

        async def run(
            task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            try:
                await serve_app(app, config, drain=drain, task_status=task_status)
            finally:
                stopped.set()

        base_url: str = await nursery.start(run)
        return RunningServer(base_url, app, engine, config, drain, stopped)

    return start
