"""Ctrl-C and SIGTERM end a command in one place: the whole run is cancelled, then exit 130.

A ``KeyboardInterrupt`` raised wherever the main thread happens to be can
land inside the embedded server, an ASGI app's code or Trio's internals (an
"Error in ASGI Framework" that the run survives, a ``TrioInternalError``).
So while the Trio run is on, a signal receiver owns SIGINT and SIGTERM and
cancels the command's top scope: every task unwinds through its ``finally``
blocks (temporary files removed, the client closed, then the embedded
server stopped), and :class:`Interrupted` is raised once all is closed.

Outside the Trio run (parsing arguments, reading standard input) the code
is sequential and a ``KeyboardInterrupt`` is safe; :func:`signals_taken`
makes SIGTERM raise it too, so both signals end the same way. Except while
modules are imported: a library may swallow it there (a bare ``except:``
around an optional import), or it may escape from code run by ``exec`` (a
dataclass being made), after which CPython exits killed by SIGINT whatever
exit code we return. :func:`signals_deferred` holds them back meanwhile.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

import trio

from .._util.groups import single_exception

__all__ = [
    "INTERRUPTED_LINE",
    "Interrupted",
    "run_interruptibly",
    "signals_deferred",
    "signals_taken",
    "stop_listening",
]

T = TypeVar("T")

#: What an interrupted command prints (on stderr), its only output after the signal.
INTERRUPTED_LINE = "orpheus-trio: interrupted"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended the command; everything it opened is closed."""


def _watched() -> list[signal.Signals]:
    # A signal ignored when we started (``nohup``, a background job's SIGINT) stays ignored.
    return [
        signum
        for signum in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(signum) is not signal.SIG_IGN
    ]


def _terminate_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # SIGINT ignored or left to the OS: interrupt here
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)  # Python's default_int_handler raises; Trio's delivers it safely


def _restore(handlers: Mapping[Any, Any]) -> None:
    for signum, handler in handlers.items():
        if handler is not None:  # None: set outside Python, cannot be put back from here
            signal.signal(signum, handler)


@contextmanager
def signals_taken() -> Iterator[None]:
    """Within the block SIGTERM does what Ctrl-C does (a ``KeyboardInterrupt``) instead of
    killing the process; on the way out both handlers are put back as they were."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if signal.SIGTERM in _watched():
        signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    try:
        yield
    finally:
        _restore(before)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM are noted, not acted on, until the block ends: then a ``KeyboardInterrupt``.

    Handlers that only take note, rather than a blocked signal mask: Python runs
    its handlers in the main thread, whichever thread the OS delivered the signal to.
    """
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    before = {signum: signal.getsignal(signum) for signum in _watched()}
    for signum in before:
        signal.signal(signum, note)
    try:
        yield
    finally:
        _restore(before)
    if received:
        raise KeyboardInterrupt


def stop_listening() -> None:
    """Ignore further signals: the command is already on its way out."""
    for signum in _watched():
        signal.signal(signum, signal.SIG_IGN)


def run_interruptibly(async_fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """``trio.run(async_fn, *args)``, cancelled as a whole by SIGINT or SIGTERM (then :class:`Interrupted`)."""
    return trio.run(_until_signalled, async_fn, args)


async def _until_signalled(async_fn: Callable[..., Awaitable[T]], args: tuple[object, ...]) -> T:
    watched = _watched()
    if not watched:
        return await async_fn(*args)
    signalled = False
    with trio.open_signal_receiver(*watched) as signals:
        try:
            with single_exception():
                async with trio.open_nursery() as nursery:

                    async def cancel_on_signal() -> None:
                        nonlocal signalled
                        async for _ in signals:
                            signalled = True
                            nursery.cancel_scope.cancel()
                            return

                    nursery.start_soon(cancel_on_signal)
                    result = await async_fn(*args)
                    nursery.cancel_scope.cancel()
        except BaseException:
            # Whatever the cancellation turned into on its way out (an error
            # from a half-read stream, a group), the answer is "interrupted".
            if not signalled:
                raise
        if signalled:
            raise Interrupted
    return result
