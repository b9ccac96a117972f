"""The race: hedged and failed-over attempts in one task group; the first audio wins.

The shape is trio's Happy Eyeballs, written on AnyIO so that it runs under
Trio (where a task group is a nursery) and asyncio alike. Attempts run as
tasks in a task group. Each attempt gets its own ``anyio.Event`` that it sets
when it fails, so the next
attempt starts at once instead of waiting out the hedge delay; otherwise the
next one starts ``hedge_delay_s`` after the last. The first attempt to return
(its response open, first audio in hand) wins and cancels the group; every
other attempt closes its own response on the way out, and one that finishes
after the winner is handed to ``plan.discard``. A non-retryable error ends the
race at once.

When every attempt failed, a copy of the most relevant error
(:func:`~orpheus_trio._policy.failure.most_relevant`) is raised ``from`` an
ExceptionGroup holding every attempt's own error, each with its own cause (a
single attempt's error is raised as it is). Policy (which endpoint, whether
the budget allows another attempt, which errors are retryable) lives in the
``plan``; the race holds none and knows no HTTP library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from ._policy.attempts import Reason
from ._policy.failure import most_relevant
from ._util.groups import single_exception

__all__ = ["RacePlan", "Reason", "race"]

W = TypeVar("W")
E = TypeVar("E", bound=BaseException)


class RacePlan(Protocol[W]):
    """The policy side of a race."""

    def next_attempt(self, reason: Reason) -> Callable[[], Awaitable[W]] | None:
        """Another attempt to start now, or ``None`` when none may start."""
        ...

    def is_retryable(self, error: Exception) -> bool:
        """Whether another attempt may succeed after ``error``."""
        ...

    async def discard(self, result: W) -> None:
        """Close an attempt that got audio after the race was already won."""
        ...


def _fresh(error: E) -> E:
    """A new error like ``error`` (same type, message and attributes), to raise
    ``from`` the group that holds the original, whose own cause stays intact."""
    try:
        fresh = type(error).__new__(type(error), *error.args)
        fresh.__dict__.update(vars(error))
    except (TypeError, AttributeError):  # an exotic error type: raise the original
        return error
    fresh.args = error.args
    if hasattr(error, "__notes__"):
        fresh.__notes__ = list(error.__notes__)
    return fresh


async def race(
    first: Callable[[], Awaitable[W]], plan: RacePlan[W], *, hedge_delay_s: float | None
) -> W:
    """Run ``first``, hedge and fail over as ``plan`` allows; return the first result."""
    if not hedge_delay_s:
        return await _one_at_a_time(first, plan)
    hedge_after = hedge_delay_s
    errors: list[Exception] = []
    won: list[W] = []
    fatal: list[Exception] = []

    async def run(
        attempt: Callable[[], Awaitable[W]], failed: anyio.Event, tasks: TaskGroup
    ) -> None:
        try:
            result = await attempt()
        except Exception as error:  # noqa: BLE001 - the plan classifies every failure
            errors.append(error)
            if not plan.is_retryable(error) and not fatal:
                fatal.append(error)
                tasks.cancel_scope.cancel()
            failed.set()
            return
        if won:
            await plan.discard(result)
        else:
            won.append(result)
            tasks.cancel_scope.cancel()

    try:
        with single_exception():  # users see one error, not the task group's wrapper
            async with anyio.create_task_group() as tasks:
                attempt: Callable[[], Awaitable[W]] | None = first
                while attempt is not None:
                    failed = anyio.Event()
                    tasks.start_soon(run, attempt, failed, tasks)
                    with anyio.move_on_after(hedge_after) as hedge_timer:
                        await failed.wait()
                    if hedge_timer.cancelled_caught:
                        attempt = plan.next_attempt("hedge")
                        if attempt is not None:
                            continue
                        # No hedge allowed: a failure may still earn a failover.
                        await failed.wait()
                    attempt = plan.next_attempt("failover")
    except BaseException:
        if won:  # cancelled from outside right after a win: do not leak the winner
            with anyio.CancelScope(shield=True):
                await plan.discard(won[0])
        raise

    if won:
        return won[0]
    _raise_failure(errors, fatal[0] if fatal else None)


async def _one_at_a_time(first: Callable[[], Awaitable[W]], plan: RacePlan[W]) -> W:
    """The race without hedging: each failover starts when the last attempt failed,
    so no two run at once and the attempts run in this task (no task group to pay for)."""
    errors: list[Exception] = []
    fatal: Exception | None = None
    attempt: Callable[[], Awaitable[W]] | None = first
    while attempt is not None:
        try:
            return await attempt()
        except Exception as error:  # noqa: BLE001 - the plan classifies every failure
            errors.append(error)
            if not plan.is_retryable(error):
                fatal = error
                break
        attempt = plan.next_attempt("failover")
    _raise_failure(errors, fatal)


def _raise_failure(errors: list[Exception], fatal: Exception | None) -> NoReturn:
    """Raise what a lost race raises: the fatal or most relevant error, grouped with the rest."""
    chosen = fatal if fatal is not None else most_relevant(errors)
    if len(errors) == 1:
        raise chosen
    # A fresh error, as trio's Happy Eyeballs raises: raising ``chosen`` itself
    # from a group holding it would overwrite its own cause (the OSError under
    # a ConnectError) and lose it from every traceback.
    group = ExceptionGroup(f"all {len(errors)} attempts failed", errors)
    raise _fresh(chosen) from group
