"""Which event loop runs the caller: Trio or asyncio.

The client is written against AnyIO, which is Trio itself under Trio; only the
transport picks a loop-native socket layer, and it asks here which one.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Awaitable, Callable
from typing import Literal

__all__ = ["Loop", "current_loop", "loop_identity", "spawn_detached"]

Loop = Literal["trio", "asyncio"]


def current_loop() -> Loop:
    """``"trio"`` or ``"asyncio"``; a clear ``RuntimeError`` outside both."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "orpheus-trio needs a running event loop: call it from a task under "
            "trio.run(...) or asyncio.run(...)"
        ) from None
    return "asyncio"


def loop_identity() -> object:
    """The running loop itself (Trio's token, or the asyncio loop); ``None`` outside one."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def spawn_detached(
    fn: Callable[[], Awaitable[None]], *, name: str, context: contextvars.Context
) -> object:
    """Run ``fn()`` as a task of no task group: a Trio system task, or an asyncio task.

    For work an async generator owns but cannot hold a task group for (a
    ``yield`` inside one is not allowed). ``fn`` must catch its own errors and
    end when the owner cancels it (a cancel scope it enters). Returns a handle
    the owner keeps until ``fn`` ended (asyncio holds only weak references).
    """
    if current_loop() == "trio":
        import trio

        trio.lowlevel.spawn_system_task(fn, name=name, context=context)
        return None

    async def run() -> None:
        await fn()

    return asyncio.get_running_loop().create_task(run(), name=name, context=context)
