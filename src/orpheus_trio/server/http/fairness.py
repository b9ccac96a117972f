"""Sans-IO connection fairness: no one client address takes the server's connections.

The run shell asks :class:`ConnectionFairness` whether to keep each accepted
connection and how long its head may take to arrive; it holds no sockets and
reads time only through the clock it is given.

- A client address may hold at most ``max_per_client`` open connections, and
  at most ``max_heads_per_client`` of them still sending their first request
  head; a connection past either cap is closed at once, so what is left of
  ``max_connections`` stays for other clients.
- A head (the first, or the next on a kept-alive connection) must arrive
  within ``head_timeout_s`` of the wait's start; while the server is busy
  (``busy_fraction`` of ``max_connections`` open) within ``busy_head_timeout_s``,
  applied at once to the heads already being waited for: slow clients are cut
  sooner exactly when their slots are wanted.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from ..config import ServerConfig

__all__ = ["ConnectionFairness", "FairnessLimits", "Slot"]


@dataclass(frozen=True)
class FairnessLimits:
    max_connections: int
    #: 0: no cap per client address.
    max_per_client: int
    #: 0: no cap per client address.
    max_heads_per_client: int
    head_timeout_s: float
    busy_head_timeout_s: float
    busy_fraction: float = 0.75

    @classmethod
    def of(cls, config: ServerConfig) -> FairnessLimits:
        return cls(
            max_connections=config.max_connections,
            max_per_client=config.max_connections_per_client,
            max_heads_per_client=config.max_head_waits_per_client,
            head_timeout_s=config.read_timeout_s,
            busy_head_timeout_s=config.busy_read_timeout_s,
        )


@dataclass(eq=False)
class Slot:
    """One admitted connection."""

    client: Hashable
    #: When the current head wait began; ``None`` while a request is being served.
    waiting_since: float | None
    #: Still sending its first head (counts against ``max_heads_per_client``).
    first_head: bool = True


@dataclass(eq=False)
class _Client:
    open: int = 0
    heads: int = 0


@dataclass
class ConnectionFairness:
    limits: FairnessLimits
    clock: Callable[[], float]
    _clients: dict[Hashable, _Client] = field(default_factory=dict)
    _open: int = 0

    @property
    def open(self) -> int:
        return self._open

    @property
    def busy(self) -> bool:
        return self._open >= self.limits.busy_fraction * self.limits.max_connections

    def admit(self, client: Hashable) -> Slot | None:
        """A connection from ``client`` was accepted: its slot, or ``None`` to close it now."""
        limits = self.limits
        known = self._clients.get(client)
        if known is not None and (
            (limits.max_per_client and known.open >= limits.max_per_client)
            or (limits.max_heads_per_client and known.heads >= limits.max_heads_per_client)
        ):
            return None
        counts = known if known is not None else self._clients.setdefault(client, _Client())
        counts.open += 1
        counts.heads += 1
        self._open += 1
        return Slot(client, waiting_since=self.clock())

    def head_received(self, slot: Slot) -> None:
        """A request head arrived: no deadline while it is served."""
        slot.waiting_since = None
        if slot.first_head:
            slot.first_head = False
            self._clients[slot.client].heads -= 1

    def awaiting_head(self, slot: Slot) -> None:
        """The connection waits for its next request (kept alive)."""
        slot.waiting_since = self.clock()

    def head_deadline(self, slot: Slot) -> float:
        """When the head being waited for is late (``inf`` while none is)."""
        if slot.waiting_since is None:
            return float("inf")
        limits = self.limits
        timeout = limits.busy_head_timeout_s if self.busy else limits.head_timeout_s
        return slot.waiting_since + timeout

    def release(self, slot: Slot) -> None:
        """The connection closed."""
        counts = self._clients[slot.client]
        counts.open -= 1
        if slot.first_head:
            slot.first_head = False
            counts.heads -= 1
        if counts.open == 0:
            del self._clients[slot.client]
        self._open -= 1
