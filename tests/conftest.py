"""Shared fixtures: a reference server on 127.0.0.1, port 0, per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from _support_server import RunningServer, StartServer, ThreadedServer

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
        config = ServerConfig(
            **{"host": "127.0.0.1", "port": 0, **settings}
        )
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


# -- both event loops ---------------------------------------------------------
#
# Tests marked ``pytest.mark.anyio`` run once per backend (AnyIO's pytest plugin):
# the client runs natively on both loops. pytest-trio's trio_mode marks every
# async test as a Trio test; that mark is taken off the AnyIO ones here (after
# trio_mode ran), so each runner keeps to its own tests.


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("anyio") is not None:
            item.own_markers[:] = [m for m in item.own_markers if m.name != "trio"]


@pytest.fixture
def threaded_server() -> Iterator[Callable[..., str]]:
    """``threaded_server(engine=None, **ServerConfig fields) -> base URL``: the
    reference server (a Trio app) on its own thread, for tests whose client runs
    on another loop. Stopped (drained) when the test ends."""
    servers: list[ThreadedServer] = []

    def start(engine: Engine | None = None, **settings: Any) -> str:
        server = ThreadedServer(engine if engine is not None else SyntheticEngine(), settings)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
