"""The CLI's signal handling in-process: one receiver cancels the run, then ``Interrupted``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import trio

from orpheus_trio.cli.interrupt import (
    Interrupted,
    run_interruptibly,
    signals_end_at_once,
    signals_taken,
)


def test_a_signal_cancels_every_task_then_raises_interrupted() -> None:
    closed: list[str] = []

    async def command() -> None:
        async def worker(name: str) -> None:
            try:
                await trio.sleep_forever()
            finally:
                closed.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "a")
            nursery.start_soon(worker, "b")
            await trio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)
            await trio.sleep_forever()

    with pytest.raises(Interrupted):
        run_interruptibly(command)
    assert sorted(closed) == ["a", "b"]


def test_an_error_the_cancellation_caused_still_reads_interrupted() -> None:
    async def command() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await trio.sleep_forever()
        except trio.Cancelled:
            raise RuntimeError("a stream cut short") from None

    with pytest.raises(Interrupted):
        run_interruptibly(command)


def test_without_a_signal_the_result_and_errors_are_the_commands_own() -> None:
    async def answer(value: int) -> int:
        await trio.sleep(0)
        return value

    async def fail() -> None:
        await trio.sleep(0)
        raise ValueError("bad")

    assert run_interruptibly(answer, 42) == 42
    with pytest.raises(ValueError, match="bad"):  # itself, not in a group
        run_interruptibly(fail)


def test_sigterm_outside_trio_raises_keyboard_interrupt_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with signals_taken(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_signal_while_starting_ends_the_process_at_once_with_the_one_line() -> None:
    """``signals_end_at_once``: what a Ctrl-C while the command imports its modules does."""
    script = (
        "import os, signal, time\n"
        "from orpheus_trio.cli.interrupt import signals_end_at_once, signals_taken\n"
        "with signals_taken(), signals_end_at_once():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "print('not reached')\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (130, b"", b"orpheus-trio: interrupted\n")
    assert time.monotonic() - started < 4  # not after the sleep


def test_handlers_come_back_after_the_start() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals_end_at_once():
        assert signal.getsignal(signal.SIGINT) not in before
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_start_up_handler_writes_the_same_line() -> None:
    from orpheus_trio.cli import _INTERRUPTED
    from orpheus_trio.cli.interrupt import INTERRUPTED_LINE

    assert _INTERRUPTED == f"{INTERRUPTED_LINE}\n".encode()
