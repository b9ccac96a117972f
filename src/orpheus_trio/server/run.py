"""Run the app on Trio with Hypercorn: programmatic start, port 0, graceful draining.

``base_url = await nursery.start(serve, engine, config)`` binds (port 0 picks a
free port), reports ``"http://host:port"`` and serves until cancelled. Set the
``drain`` event to shut down gracefully: new synthesis requests get 503
``draining``, in-flight streams get ``config.drain_grace_s`` to finish (those
still running then end with an in-band ``cancelled`` error frame), then
``serve`` returns. The caller owns the engine and closes it.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .._groups import single_exception
from .app import OrpheusApp, create_app
from .config import ServerConfig
from .engine import Engine

__all__ = ["serve", "serve_app"]

#: Time for cancelled streams to send their last frame, then for Hypercorn to close.
_HYPERCORN_GRACE_S = 1.0


async def serve(
    engine: Engine,
    config: ServerConfig,
    *,
    drain: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``engine`` until cancelled, or until ``drain`` is set and draining ends."""
    await serve_app(
        create_app(engine, config), config, drain=drain, task_status=task_status
    )


async def serve_app(
    app: OrpheusApp,
    config: ServerConfig,
    *,
    drain: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Like :func:`serve` for an app made by :func:`~.app.create_app` (tests inspect it)."""
    stop = trio.Event()
    # Hypercorn's task ends only by our stop: its failure (a port in use) is the only error.
    with single_exception():
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(
                    hypercorn_serve,
                    cast(Any, app),
                    _hypercorn_config(config),
                    shutdown_trigger=stop.wait,
                    mode="asgi",
                )
            )
            task_status.started(binds[0])
            if drain is None:
                await trio.sleep_forever()
            else:
                await drain.wait()
            app.start_draining()
            with trio.move_on_after(config.drain_grace_s):
                await app.wait_idle()
            # Past the grace, streams still running end with an in-band ``cancelled``.
            app.cancel_streams()
            with trio.move_on_after(_HYPERCORN_GRACE_S):
                await app.wait_idle()
            stop.set()


def _hypercorn_config(config: ServerConfig) -> HypercornConfig:
    hc = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    # Headers must arrive within read_timeout_s: the idle timer runs until they do.
    hc.keep_alive_timeout = config.read_timeout_s
    hc.graceful_timeout = _HYPERCORN_GRACE_S
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.accesslog = None
    return hc
