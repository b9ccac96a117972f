"""Admission's I/O shell: the sans-IO :class:`~.admission.Admission` with Trio events.

A queued request waits for its turn on an event that the release of another
sets; every admitted request runs in a scope that shutdown can cancel; the
server is idle when nothing is queued or running. A gateway reports the load
its best upstream would add (``upstream_load``) on top of its own queue.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from .admission import Admission, Rejected, Ticket
from .config import ServerConfig
from .exchange import HTTPError
from .metrics import ServerMetrics

__all__ = ["Slots"]


class Slots:
    """Who runs, who waits, and the scopes shutdown ends."""

    def __init__(
        self,
        config: ServerConfig,
        metrics: ServerMetrics,
        clock: Callable[[], float],
        upstream_load: Callable[[], float] | None = None,
    ) -> None:
        self.admission = Admission(config.max_concurrency, config.max_queue)
        self._metrics = metrics
        self._clock = clock
        self._upstream_load = upstream_load
        self._turns: dict[Ticket, trio.Event] = {}
        #: One scope per admitted request, so shutdown can end them all cleanly.
        self._streams: set[trio.CancelScope] = set()
        self._idle = trio.Event()
        self._idle.set()

    def admit(self) -> Ticket:
        """A ticket (running or queued), or :class:`HTTPError` 429/503."""
        try:
            ticket = self.admission.admit(self._clock())
        except Rejected as rejected:
            raise HTTPError(
                rejected.status,
                rejected.code,
                rejected.message,
                retry_after_s=rejected.retry_after_s,
            ) from None
        if self._idle.is_set():
            self._idle = trio.Event()
        if not ticket.running:
            self._turns[ticket] = trio.Event()
        self._update_load()
        return ticket

    async def wait_turn(self, ticket: Ticket) -> None:
        """Return once ``ticket`` runs."""
        turn = self._turns.get(ticket)
        if turn is not None:
            await turn.wait()

    def release(self, ticket: Ticket) -> None:
        """``ticket`` is done (or abandoned): the next in the queue runs."""
        self._turns.pop(ticket, None)
        for promoted in self.admission.release(ticket, self._clock()):
            self._turns[promoted].set()
        self._update_load()
        if self.admission.depth == 0:
            self._idle.set()

    @contextmanager
    def cancellable_by_shutdown(self) -> Iterator[trio.CancelScope]:
        """A scope that :meth:`cancel_streams` cancels."""
        with trio.CancelScope() as scope:
            self._streams.add(scope)
            try:
                yield scope
            finally:
                self._streams.discard(scope)

    def cancel_streams(self) -> None:
        for scope in self._streams:
            scope.cancel()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def reported_depth(self, own: int) -> int:
        """The queue depth this server reports (header, metrics frame, /v1/system).

        A gateway's running requests run upstream, so it reports the requests
        waiting in its own queue plus the load its best upstream would add.
        """
        if self._upstream_load is None:
            return own
        return self.admission.queued + math.ceil(self._upstream_load())

    def _update_load(self) -> None:
        self._metrics.set_load(self.admission.queued, self.admission.running)
