"""Admission control, sans-IO: a concurrency limit, a bounded FIFO queue, draining.

The server asks :meth:`Admission.admit` for a :class:`Ticket`; a ticket either
runs at once or waits in the queue until :meth:`Admission.release` of another
ticket promotes it. Past the queue, :class:`Rejected` says 429 ``overloaded``
with a Retry-After estimated from recent service times; while draining it says
503 ``draining``. Times come in as arguments (an injected clock), so the policy
is tested without sleeping. The I/O shell turns promotions into ``trio.Event``s.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Admission", "Rejected", "Ticket"]


class Rejected(Exception):
    """The request is not admitted: HTTP ``status`` with error ``code``."""

    def __init__(
        self, status: int, code: str, message: str, retry_after_s: int | None = None
    ):
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        super().__init__(f"{status} {code}: {message}")


@dataclass(eq=False)
class Ticket:
    """One admitted request. ``depth_at_admission`` = queued + running, itself included."""

    admitted_at: float
    depth_at_admission: int
    running: bool = False
    started_at: float | None = None
    done: bool = False


@dataclass
class Admission:
    max_concurrency: int
    max_queue: int
    #: Weight of the newest service time in the running average.
    smoothing: float = 0.2
    draining: bool = False
    _running: set[Ticket] = field(default_factory=set)
    _queue: deque[Ticket] = field(default_factory=deque)
    _mean_service_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def depth(self) -> int:
        """Requests queued plus running."""
        return self.running + self.queued

    def admit(self, now: float) -> Ticket:
        """Admit a request (running or queued) or raise :class:`Rejected`."""
        if self.draining:
            raise Rejected(
                503, "draining", "server is shutting down; try another endpoint"
            )
        if self.running < self.max_concurrency:
            ticket = Ticket(now, self.depth + 1)
            self._start(ticket, now)
            return ticket
        if self.queued < self.max_queue:
            ticket = Ticket(now, self.depth + 1)
            self._queue.append(ticket)
            return ticket
        raise Rejected(
            429,
            "overloaded",
            f"{self.running} running and {self.queued} queued (limits "
            f"{self.max_concurrency} + {self.max_queue})",
            retry_after_s=self.retry_after_s(),
        )

    def retry_after_s(self) -> int:
        """Whole seconds until a queue slot is likely free (at least 1)."""
        mean = self._mean_service_s if self._mean_service_s is not None else 1.0
        waves = (self.queued + 1) / self.max_concurrency
        return max(1, math.ceil(mean * waves))

    def release(self, ticket: Ticket, now: float) -> list[Ticket]:
        """Finish (or abandon) ``ticket``; return the queued tickets that now run."""
        if ticket.done:
            return []
        ticket.done = True
        if ticket.running:
            self._running.discard(ticket)
            assert ticket.started_at is not None
            elapsed = max(0.0, now - ticket.started_at)
            if self._mean_service_s is None:
                self._mean_service_s = elapsed
            else:
                self._mean_service_s += self.smoothing * (
                    elapsed - self._mean_service_s
                )
        else:
            self._queue.remove(ticket)
        promoted = []
        while self._queue and self.running < self.max_concurrency:
            waiting = self._queue.popleft()
            self._start(waiting, now)
            promoted.append(waiting)
        return promoted

    def _start(self, ticket: Ticket, now: float) -> None:
        ticket.running = True
        ticket.started_at = now
        self._running.add(ticket)
