"""The reference server: the v1 contract on Trio (a built-in HTTP/1.1 server), any engine.

``base_url = await nursery.start(serve, engine, config)`` for tests and helpers;
``orpheus-trio serve`` on the command line (``orpheus_trio.cli.serve``).
"""

from .app import OrpheusApp, create_app
from .config import ServerConfig
from .engine import AbortStream, Engine, EngineError, Hints, InvalidParam, RawLine
from .http.run import serve, serve_app

__all__ = [
    "AbortStream",
    "Engine",
    "EngineError",
    "Hints",
    "InvalidParam",
    "OrpheusApp",
    "RawLine",
    "ServerConfig",
    "create_app",
    "serve",
    "serve_app",
]
