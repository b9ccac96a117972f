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
exit code we return. Imports happen at the start, before anything is open,
so there :func:`signals_end_at_once` simply ends the process.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

#: ``typing.TYPE_CHECKING`` without importing typing: this module is loaded before the
#: command takes charge of the signals, so it imports as little as it can.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from types import FrameType
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = [
    "INTERRUPTED_LINE",
    "Interrupted",
    "run_interruptibly",
    "signals_end_at_once",
    "signals_taken",
    "stop_listening",
]

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
    """Within the block Ctrl-C raises ``KeyboardInterrupt`` (whatever handled it before: the
    command line's own start-up handler) and SIGTERM does the same instead of killing the
    process; on the way out both handlers are put back as they were."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    watched = _watched()
    if signal.SIGINT in watched:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.SIGTERM in watched:
        signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    try:
        yield
    finally:
        _restore(before)


@contextmanager
def signals_end_at_once() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM end the process on the spot: the one line, exit 130.

    For the start of a command, before it has opened or written anything:
    nothing needs closing yet, and the imports it does meanwhile take long
    (a third of a second, more on a busy machine) while a ``KeyboardInterrupt``
    raised inside them is unsafe. On the way out the handlers are put back.
    """

    def leave(signum: int, frame: FrameType | None) -> None:
        os.write(2, f"{INTERRUPTED_LINE}\n".encode())  # unbuffered: nothing else runs after this
        os._exit(130)

    before = {signum: signal.getsignal(signum) for signum in _watched()}
    for signum in before:
        signal.signal(signum, leave)
    try:
        yield
    finally:
        _restore(before)


def stop_listening() -> None:
    """Ignore further signals: the command is already on its way out."""
    for signum in _watched():
        signal.signal(signum, signal.SIG_IGN)


def run_interruptibly(async_fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """``trio.run(async_fn, *args)``, cancelled as a whole by SIGINT or SIGTERM (then :class:`Interrupted`)."""
    import trio  # here: the command line loads Trio only for the commands that run it

    return trio.run(_until_signalled, async_fn, args)


async def _until_signalled(async_fn: Callable[..., Awaitable[T]], args: tuple[object, ...]) -> T:
    import trio

    from .._util.groups import single_exception

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
