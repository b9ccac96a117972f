"""Shared by the examples: a client for $ORPHEUS_URLS, or for a reference server started in-process.

With no $ORPHEUS_URLS the examples start the reference server with the espeak
engine on 127.0.0.1 (port 0: any free port) inside their own Trio run, exactly
as ``orpheus-trio speak`` does, and talk to it over HTTP through ``OrpheusTTS``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from orpheus_trio.client import OrpheusTTS


@asynccontextmanager
async def open_tts() -> AsyncIterator[OrpheusTTS]:
    urls = [
        url.strip()
        for url in os.environ.get("ORPHEUS_URLS", "").split(",")
        if url.strip()
    ]
    if urls:
        # An empty ORPHEUS_KEY means no key, as for the orpheus-trio command.
        api_key = os.environ.get("ORPHEUS_KEY") or None
        async with OrpheusTTS(urls, api_key=api_key) as tts:
            yield tts
        return

    from orpheus_trio.server import ServerConfig, serve
    from orpheus_trio.server.engines.espeak import EspeakEngine

    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(
            serve, EspeakEngine(), ServerConfig(host="127.0.0.1", port=0)
        )
        async with OrpheusTTS(base_url) as tts:
            yield tts
        nursery.cancel_scope.cancel()  # stop the embedded server
