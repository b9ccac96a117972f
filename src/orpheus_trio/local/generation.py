"""Run a blocking generator on a worker thread and consume it from Trio or asyncio.

The generator (token generation, in practice) runs on its own thread and hands
each item to the event loop (through AnyIO, so either loop) through a small bounded memory channel, so it never runs far
ahead of the consumer. When the consumer stops (``aclose``, cancellation, or
just leaving ``async with``), the thread sees it before producing the next item:
a blocked hand-over fails at once, and a stop flag is checked between items.
``aclose`` then waits for the thread to finish, so the model is idle again when
it returns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import outcome
import trio

__all__ = ["ThreadedGenerator"]

T = TypeVar("T")
R = TypeVar("R")

_CONSUMER_GONE = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.RunFinishedError,
    trio.Cancelled,
    asyncio.CancelledError,
)


class ThreadedGenerator(Generic[T, R]):
    """An async iterator over ``make()``'s items, produced on a worker thread.

    ``result`` holds the generator's return value once it ran to its end;
    ``stopped_early`` is true when the consumer stopped it first. Errors raised
    by the generator are raised from ``__anext__``. The thread starts on the
    first ``__anext__``. Use it with ``async with`` (or call ``aclose``).
    """

    #: The thread stalls when its buffer is full: a consumer must not dawdle.
    reads_can_wait = False

    def __init__(
        self,
        make: Callable[[], Generator[T, None, R]],
        *,
        buffer: int = 16,
        name: str = "orpheus-generation",
        join_timeout_s: float = 30.0,
    ) -> None:
        self._make = make
        self._name = name
        self._join_timeout_s = join_timeout_s
        self._send, self._receive = anyio.create_memory_object_stream[T](buffer)
        self._stop = threading.Event()
        self._done = threading.Event()  # set on the loop, by _finish
        self._started = False
        self._outcome: outcome.Outcome[R | None] | None = None
        self._stopped_early = False  # written by the thread before it ends
        self.items = 0
        self.stopped_early = False

    @property
    def result(self) -> R | None:
        """The generator's return value; ``None`` while running or when stopped early."""
        if isinstance(self._outcome, outcome.Value):
            value: R | None = self._outcome.value
            return value
        return None

    @property
    def finished(self) -> bool:
        """Whether the worker thread has ended."""
        return self._done.is_set()

    def _produce(self, token: anyio.lowlevel.EventLoopToken) -> R | None:
        generator = self._make()
        try:
            while not self._stop.is_set():
                try:
                    item = next(generator)
                except StopIteration as end:
                    result: R = end.value
                    return result
                try:
                    anyio.from_thread.run(self._send.send, item, token=token)
                except _CONSUMER_GONE:
                    break
            self._stop.set()
            self._stopped_early = True
            return None
        finally:
            generator.close()

    def _finish(self, result: outcome.Outcome[R | None]) -> None:
        self._outcome = result
        self.stopped_early = self._stopped_early
        self._send.close()
        self._done.set()
        self._loop_done.set()

    def _start(self) -> None:
        token = anyio.lowlevel.current_token()
        self._loop_done = anyio.Event()

        def run() -> None:
            result = outcome.capture(self._produce, token)
            try:
                anyio.from_thread.run_sync(self._finish, result, token=token)
            except RuntimeError:
                pass  # the loop has gone; nobody is left to tell.

        threading.Thread(target=run, name=self._name, daemon=True).start()
        self._started = True

    def __aiter__(self) -> ThreadedGenerator[T, R]:
        return self

    async def __anext__(self) -> T:
        if not self._started:
            if self._stop.is_set():
                raise StopAsyncIteration
            self._start()
        try:
            item = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            await self._loop_done.wait()
            if isinstance(self._outcome, outcome.Error):
                self._outcome.unwrap()
            raise StopAsyncIteration from None
        self.items += 1
        return item

    async def aclose(self) -> None:
        """Stop the generator and wait (shielded, bounded) for its thread to end."""
        self._stop.set()
        self._receive.close()
        if not self._started:
            self._send.close()  # no thread will: a stream never read is closed here
            return
        with anyio.move_on_after(self._join_timeout_s, shield=True):
            await self._loop_done.wait()

    async def __aenter__(self) -> ThreadedGenerator[T, R]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
