"""Ctrl-C (SIGINT) and SIGTERM at random moments of ``speak`` and ``batch`` on the embedded server.

Whatever the moment (reading the input, starting the server, streaming,
writing), the run ends within 2 s with exit code 130, one line on stderr and
nothing else, no temporary ``.part`` file left, and every WAV under its final
name complete. The moments are random; the seed is in every failure message,
and ``ORPHEUS_TRIO_INTERRUPT_SEED`` replays one.

Moments are counted from when the command takes charge of the signals (seen
in /proc: it catches SIGTERM) or from its first output file. It takes charge
first thing (``orpheus_trio.cli.main``, before any import but signal's C
core), before it imports the sub-command (httpx, Trio, numpy: the first
~0.3 s), so a third of the moments fall in its first 50 ms. Before that
moment Python itself is starting (site, runpy: ~10 ms on an idle machine),
and a Ctrl-C there is Python's own.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from _support_cli import clean_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/proc/self/status").exists(),
        reason="reads signal dispositions from /proc (Linux)",
    ),
]

RUNS_PER_COMMAND = 30
#: Processes at once: enough to keep the test short, few enough for a 2-core box.
PARALLEL = 3
EXIT_WITHIN_S = 2.0
INTERRUPTED_LINE = b"orpheus-trio: interrupted\n"


@dataclass(frozen=True)
class Moment:
    signum: signal.Signals
    #: Counted from the command's taking charge of signals, or from its first output file.
    after_output: bool
    delay_s: float

    def __str__(self) -> str:
        since = "its first output file" if self.after_output else "it took charge of signals"
        return f"{self.signum.name} {self.delay_s:.3f} s after {since}"


def random_moments(rng: random.Random, count: int) -> list[Moment]:
    """A third in the first 50 ms (importing), a third over the start (input, server
    start), a third inside the streaming."""
    moments = []
    for index in range(count):
        signum = signal.SIGTERM if rng.random() < 0.25 else signal.SIGINT
        if index % 3 == 0:
            moments.append(Moment(signum, False, rng.uniform(0.0, 0.05)))
        elif index % 3 == 1:
            moments.append(Moment(signum, True, rng.uniform(0.0, 0.4)))
        else:
            moments.append(Moment(signum, False, rng.uniform(0.0, 1.0)))
    return moments


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (the CLI installs one first thing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def long_text(sentences: int) -> str:
    return " ".join(
        f"Sentence {i} is here so that the run lasts long enough to be interrupted."
        for i in range(sentences)
    )


def command_line(command: str, workdir: Path) -> list[str]:
    out = workdir / "out"
    if command == "speak":
        # Several seconds of synthesis: the run is always still going at the signal.
        (workdir / "story.txt").write_text(long_text(600), encoding="utf-8")
        args = ["speak", "-", "-o", str(out / "story.wav"), "-q"]
    else:
        lines = "\n".join(f"Item {i} of the batch, a short sentence." for i in range(3000))
        (workdir / "items.txt").write_text(lines + "\n", encoding="utf-8")
        args = ["batch", str(workdir / "items.txt"), "-d", str(out), "--no-progress"]
    return [sys.executable, "-m", "orpheus_trio", *args]


async def interrupt_once(command: str, moment: Moment, workdir: Path) -> list[str]:
    """Run ``command``, signal it at ``moment``; the problems seen (none: all is well)."""
    workdir.mkdir()
    out = workdir / "out"
    out.mkdir()
    argv = command_line(command, workdir)
    stdin = open(workdir / "story.txt", "rb") if command == "speak" else subprocess.DEVNULL
    with open(workdir / "stdout", "wb") as stdout, open(workdir / "stderr", "wb") as stderr:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=clean_env(),
            # A shell that starts pytest in the background ignores SIGINT; give the child the default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    if not isinstance(stdin, int):
        stdin.close()
    try:
        with trio.fail_after(60):
            while not catches_sigterm(process.pid) and process.poll() is None:
                await trio.sleep(0.005)
            while moment.after_output and not any(out.iterdir()):
                await trio.sleep(0.005)
        await trio.sleep(moment.delay_s)
        if process.poll() is not None:
            return [f"finished (exit {process.returncode}) before the signal: lengthen the job"]
        signalled_at = trio.current_time()
        process.send_signal(moment.signum)
        with trio.move_on_after(EXIT_WITHIN_S + 5):
            await process.wait()
        took = trio.current_time() - signalled_at
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    problems = []
    if process.returncode != 130:
        problems.append(f"exit code {process.returncode}, not 130")
    if took > EXIT_WITHIN_S:
        problems.append(f"took {took:.2f} s to exit")
    err = (workdir / "stderr").read_bytes()
    if err != INTERRUPTED_LINE:
        problems.append(f"stderr is not the one line: {err[-1500:]!r}")
    if (workdir / "stdout").read_bytes():
        problems.append(f"stdout: {(workdir / 'stdout').read_bytes()[:300]!r}")
    for path in out.iterdir():
        if path.suffix != ".wav":
            problems.append(f"left {path.name}")
            continue
        with wave.open(str(path), "rb") as clip:
            frames = clip.getnframes()
            complete = clip.getframerate() == 24_000 and frames > 0
        if not complete or path.stat().st_size != 44 + 2 * frames:
            problems.append(f"{path.name} is incomplete")
    return problems


async def interrupt_many(command: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("ORPHEUS_TRIO_INTERRUPT_SEED", random.randrange(2**32)))
    moments = random_moments(random.Random(seed), RUNS_PER_COMMAND)
    failures: list[str] = []
    limit = trio.CapacityLimiter(PARALLEL)

    async def one(index: int, moment: Moment) -> None:
        async with limit:
            problems = await interrupt_once(command, moment, tmp_path / f"run{index}")
        failures.extend(f"run {index}, {moment}: {problem}" for problem in problems)

    async with trio.open_nursery() as nursery:
        for index, moment in enumerate(moments):
            nursery.start_soon(one, index, moment)
    assert not failures, f"seed {seed}, {len(failures)} problems:\n" + "\n".join(failures)


async def test_speak_interrupted_at_random_moments_exits_130_cleanly(tmp_path: Path) -> None:
    await interrupt_many("speak", tmp_path)


async def test_batch_interrupted_at_random_moments_exits_130_cleanly(tmp_path: Path) -> None:
    await interrupt_many("batch", tmp_path)
