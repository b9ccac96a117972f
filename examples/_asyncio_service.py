"""Shared by the asyncio examples: the services of $ORPHEUS_URLS, or a reference server on a thread.

The client in these examples runs natively on asyncio. Only the reference
server (a Trio app, started when $ORPHEUS_URLS is unset, on 127.0.0.1 port 0)
runs on a thread of its own, as a real service would run in its own process.
"""

from __future__ import annotations

import os
import queue
import threading
from functools import partial

import trio

__all__ = ["api_key", "service_urls"]


def api_key() -> str | None:
    # An empty ORPHEUS_KEY means no key, as for the orpheus-trio command.
    return os.environ.get("ORPHEUS_KEY") or None


def service_urls() -> list[str]:
    """$ORPHEUS_URLS (comma-separated), or the URL of a reference server started now."""
    urls = [u.strip() for u in os.environ.get("ORPHEUS_URLS", "").split(",") if u.strip()]
    return urls or [_start_reference_server()]


def _start_reference_server() -> str:
    from orpheus_trio.server import ServerConfig, serve
    from orpheus_trio.server.engines.espeak import EspeakEngine

    started: queue.Queue[str | BaseException] = queue.Queue()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            config = ServerConfig(host="127.0.0.1", port=0)
            started.put(await nursery.start(partial(serve, EspeakEngine(), config)))

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as error:  # noqa: BLE001 - reported to the caller
            started.put(error)

    threading.Thread(target=run, name="orpheus reference server", daemon=True).start()
    url = started.get(timeout=60)
    if isinstance(url, BaseException):
        raise url
    return url
