"""The server's settings: limits, timeouts and keys, in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from ..apikey import check_api_key

__all__ = ["ServerConfig"]


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
    #: Connections one client address may hold open (0: no cap). Behind a
    #: proxy every caller shares its address: raise it, or 0.
    max_connections_per_client: int = 256
    #: Connections of one client address still sending their first request
    #: head (0: no cap); past either cap a connection is closed when accepted.
    max_head_waits_per_client: int = 32
    #: The head timeout (instead of ``read_timeout_s``) while 3/4 of
    #: ``max_connections`` are open, also for the heads already awaited.
    busy_read_timeout_s: float = 2.0
    #: On shutdown, how long in-flight streams may take to finish.
    drain_grace_s: float = 30.0
    #: Serve the browser playground at ``GET /`` (``--no-playground`` turns it off).
    playground: bool = True
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
            "busy_read_timeout_s": self.busy_read_timeout_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.max_queue < 0 or self.drain_grace_s < 0:
            raise ValueError("max_queue and drain_grace_s must be >= 0")
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("default_timeout_s must not exceed max_timeout_s")
        if self.max_connections_per_client < 0 or self.max_head_waits_per_client < 0:
            raise ValueError(
                "max_connections_per_client and max_head_waits_per_client must be >= 0"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        for index, key in enumerate(self.api_keys):
            check_api_key(key, f"API key {index + 1}")
