"""The server's settings: limits, timeouts and keys, in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from ..apikey import check_api_key

__all__ = ["HTTP_SERVERS", "ServerConfig"]

#: The HTTP servers that can run the app (``ServerConfig.http_server``).
HTTP_SERVERS = ("builtin", "hypercorn")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    #: 0 picks a free port; ``serve`` reports the real one.
    port: int = 8000
    #: Accepted API keys; empty = no auth.
    api_keys: tuple[str, ...] = ()
    #: Whether ``/v1/system`` and ``/metrics`` need a key too (when keys are set).
    protect_service_endpoints: bool = False
    #: Requests synthesized at once; more wait in the queue.
    max_concurrency: int = 4
    #: Requests allowed to wait; past this, 429 ``overloaded``.
    max_queue: int = 16
    default_timeout_s: float = 60.0
    #: Cap on a request's ``timeout_s``.
    max_timeout_s: float = 600.0
    max_text_chars: int = 8000
    #: Largest request body; checked against Content-Length before reading.
    max_body_bytes: int = 256 * 1024
    #: Time allowed to receive a request's headers and then its body.
    read_timeout_s: float = 10.0
    #: A write to a caller that makes no headway for this long closes its
    #: connection (a caller that stopped reading); an honest real-time
    #: reader takes each frame within milliseconds.
    write_stall_timeout_s: float = 30.0
    #: Connections open at once; past this, new ones wait to be accepted.
    max_connections: int = 1024
    #: On shutdown, how long in-flight streams may take to finish.
    drain_grace_s: float = 30.0
    #: Serve the browser playground at ``GET /`` (``--no-playground`` turns it off).
    playground: bool = True
    #: Which HTTP/1.1 server runs the app: ``"builtin"`` (:mod:`.http.connection`, lean,
    #: HTTP/1.1 only) or ``"hypercorn"``.
    http_server: str = "builtin"
    #: Reported as ``server`` by ``/v1/system``.
    server_name: str = "orpheus-trio"

    def __post_init__(self) -> None:
        positive = {
            "max_concurrency": self.max_concurrency,
            "default_timeout_s": self.default_timeout_s,
            "max_timeout_s": self.max_timeout_s,
            "max_text_chars": self.max_text_chars,
            "max_body_bytes": self.max_body_bytes,
            "read_timeout_s": self.read_timeout_s,
            "write_stall_timeout_s": self.write_stall_timeout_s,
            "max_connections": self.max_connections,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.max_queue < 0 or self.drain_grace_s < 0:
            raise ValueError("max_queue and drain_grace_s must be >= 0")
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("default_timeout_s must not exceed max_timeout_s")
        if self.http_server not in HTTP_SERVERS:
            raise ValueError(
                f"http_server must be one of {', '.join(HTTP_SERVERS)}, got {self.http_server!r}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        for index, key in enumerate(self.api_keys):
            check_api_key(key, f"API key {index + 1}")
