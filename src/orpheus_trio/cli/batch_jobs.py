"""Batch synthesis: many texts to many WAV files, bounded concurrency, resumable.

Input is plain text (one item per line) or JSON Lines (``{"text", "voice",
"params", "output"}`` per line); the two may be mixed, a line starting with
``{`` being JSON. Each item is written to ``out_dir/output`` through a
temporary name and a rename, so a file under its final name is always
complete: a rerun skips items whose output exists and redoes the rest. One
batch at a time writes into a directory (a lock file while it runs), so a run
never mistakes another live run's temporary files for leftovers.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import AsyncIterable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import trio

from ..audio.pcm import save_wav_stream, temporary_path
from ..errors import OrpheusError

try:
    import fcntl
except ImportError:  # not POSIX: no lock, one batch per directory is then up to the user
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BatchDirectoryBusy",
    "BatchInputError",
    "BatchItem",
    "BatchProgress",
    "BatchReport",
    "Failure",
    "describe_error",
    "parse_items",
    "run_batch",
]

_JSON_KEYS = frozenset({"text", "voice", "params", "output"})

#: Synthesizes one item: an async iterator of PCM (s16le mono 24 kHz).
SynthesizeItem = Callable[["BatchItem"], AsyncIterable[bytes]]


class BatchInputError(ValueError):
    """The batch file is malformed; the message names the line."""


class BatchDirectoryBusy(OrpheusError):
    """Another batch is writing into the same output directory right now."""


#: Held (``flock``) by the batch writing into a directory; removed when it ends.
LOCK_NAME = ".orpheus-trio-batch.lock"


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One thing to say: where it came from (1-based line), what, how, and into which file."""

    line: int
    text: str
    output: str
    voice: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failure:
    item: BatchItem
    reason: str


@dataclass(slots=True)
class BatchReport:
    written: list[BatchItem] = field(default_factory=list)
    skipped: list[BatchItem] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    audio_s: float = 0.0


def parse_items(
    content: str, *, voice: str | None = None, params: dict[str, Any] | None = None
) -> list[BatchItem]:
    """Items from a batch file's text. ``voice`` and ``params`` are defaults items may override.

    Plain lines are numbered in order (``0001.wav``, ...); blank lines and lines
    starting with ``#`` are skipped. Raises :class:`BatchInputError` naming the line.
    """
    raw: list[tuple[int, str, str | None, dict[str, Any], str | None]] = []
    for number, line in enumerate(content.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("{"):
            raw.append(
                (number, *_parse_json_line(stripped, number, voice, params or {}))
            )
        else:
            raw.append((number, stripped, voice, dict(params or {}), None))
    width = max(4, len(str(len(raw))))
    items: list[BatchItem] = []
    used: dict[str, int] = {}
    for index, (number, text, item_voice, item_params, output) in enumerate(
        raw, start=1
    ):
        name = output if output is not None else f"{index:0{width}d}.wav"
        if name in used:
            raise BatchInputError(
                f"line {number}: output {name!r} is also the output of line {used[name]}"
            )
        used[name] = number
        items.append(BatchItem(number, text, name, item_voice, item_params))
    return items


def _parse_json_line(
    line: str, number: int, voice: str | None, params: dict[str, Any]
) -> tuple[str, str | None, dict[str, Any], str | None]:
    try:
        obj: dict[str, Any] = json.loads(
            line
        )  # a line starting with "{" is an object or invalid
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise BatchInputError(f"line {number}: not valid JSON: {error}") from None
    unknown = sorted(set(obj) - _JSON_KEYS)
    if unknown:
        raise BatchInputError(
            f"line {number}: unknown key(s) {', '.join(unknown)}; known: text, voice, params, output"
        )
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BatchInputError(f"line {number}: 'text' must be a non-empty string")
    item_voice = obj.get("voice", voice)
    if item_voice is not None and not isinstance(item_voice, str):
        raise BatchInputError(f"line {number}: 'voice' must be a string or null")
    item_params = obj.get("params", {})
    if not isinstance(item_params, dict):
        raise BatchInputError(f"line {number}: 'params' must be a JSON object")
    output = obj.get("output")
    if output is not None:
        output = _safe_output_name(output, number)
    return text.strip(), item_voice, {**params, **item_params}, output


def _safe_output_name(output: object, number: int) -> str:
    """A plain file name inside the output folder: no folders, no ``..``, ``.wav`` added if missing."""
    if not isinstance(output, str) or not output.strip():
        raise BatchInputError(f"line {number}: 'output' must be a non-empty string")
    path = PurePath(output)
    if (
        len(path.parts) != 1
        or path.name in (".", "..")
        or "\\" in output
        or output.startswith(".")
    ):
        raise BatchInputError(
            f"line {number}: 'output' must be a plain file name, got {output!r}"
        )
    return output if path.suffix.lower() == ".wav" else f"{output}.wav"


class BatchProgress:
    """Counts and rates for a progress display; the clock is passed in, so it is testable."""

    def __init__(self, total: int, started: float) -> None:
        self.total = total
        self.started = started
        self.done = 0
        self.failed = 0
        self.audio_s = 0.0

    def item_finished(self, audio_s: float | None) -> None:
        """One item ended: with ``audio_s`` seconds written, or failed (``None``)."""
        self.done += 1
        if audio_s is None:
            self.failed += 1
        else:
            self.audio_s += audio_s

    def eta_s(self, now: float) -> float | None:
        elapsed = now - self.started
        if self.done == 0 or elapsed <= 0:
            return None
        return (self.total - self.done) * elapsed / self.done

    def render(self, now: float, width: int = 24) -> str:
        """``[#####.....]  12/40 items  38.2 s audio  3.1x real time  ETA 0:21  (1 failed)``."""
        fraction = self.done / self.total if self.total else 1.0
        filled = round(width * fraction)
        elapsed = max(now - self.started, 1e-9)
        eta = self.eta_s(now)
        parts = [
            f"[{'#' * filled}{'.' * (width - filled)}]",
            f"{self.done}/{self.total} items",
            f"{self.audio_s:.1f} s audio",
            f"{self.audio_s / elapsed:.1f}x real time",
            f"ETA {_clock(eta)}" if eta is not None else "ETA --:--",
        ]
        if self.failed:
            parts.append(f"({self.failed} failed)")
        return "  ".join(parts)


def _clock(seconds: float) -> str:
    seconds = math.ceil(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe_error(error: BaseException) -> str:
    """One line for a failure list: the type, the message and any notes (which piece, ...)."""
    text = f"{type(error).__name__}: {error}"
    notes = getattr(error, "__notes__", None)
    if notes:
        text += " (" + "; ".join(str(note) for note in notes) + ")"
    return text


async def run_batch(
    items: Sequence[BatchItem],
    out_dir: Path,
    synthesize_item: SynthesizeItem,
    *,
    concurrency: int = 4,
    on_progress: Callable[[BatchItem, float | None], None] | None = None,
) -> BatchReport:
    """Write every item whose output is missing; never raises for one item's failure.

    ``on_progress(item, audio_s)`` is called as each item ends (``audio_s`` is
    ``None`` when it failed). Items already complete are in ``report.skipped``.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with _only_batch_in(out_dir):
        return await _run_batch(items, out_dir, synthesize_item, concurrency, on_progress)


async def _run_batch(
    items: Sequence[BatchItem],
    out_dir: Path,
    synthesize_item: SynthesizeItem,
    concurrency: int,
    on_progress: Callable[[BatchItem, float | None], None] | None,
) -> BatchReport:
    report = BatchReport()
    todo: list[BatchItem] = []
    for item in items:
        (report.skipped if (out_dir / item.output).exists() else todo).append(item)

    async def work(item: BatchItem) -> None:
        path = out_dir / item.output
        audio_s: float | None = None
        try:
            audio_s = await save_wav_stream(synthesize_item(item), path)
        except Exception as error:
            report.failed.append(Failure(item, describe_error(error)))
        else:
            report.written.append(item)
            report.audio_s += audio_s
        if on_progress is not None:
            on_progress(item, audio_s)

    send, receive = trio.open_memory_channel[BatchItem](0)

    async def worker(items: trio.MemoryReceiveChannel[BatchItem]) -> None:
        async with items:
            async for item in items:
                await work(item)

    async with trio.open_nursery() as nursery:
        async with receive:
            for _ in range(min(concurrency, len(todo))):
                nursery.start_soon(worker, receive.clone())
        async with send:
            for item in todo:
                await send.send(item)
    _remove_stale_temporaries(out_dir, items)
    report.written.sort(key=lambda item: item.line)
    report.failed.sort(key=lambda failure: failure.item.line)
    return report


@contextmanager
def _only_batch_in(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s batch lock, or raise :class:`BatchDirectoryBusy`.

    ``flock`` ends with its process, so a killed run leaves nothing that
    blocks the next one. The file is removed on the way out while still held;
    a run that opened it just before then finds a different file under the
    name once it gets the lock, and starts over with the new one.
    """
    if fcntl is None:
        yield
        return
    path = out_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BatchDirectoryBusy(
                f"another batch is writing into {out_dir} (it holds {path}); "
                "wait for it to end or choose another output directory"
            ) from None
        held = os.fstat(fd)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _remove_stale_temporaries(out_dir: Path, items: Sequence[BatchItem]) -> None:
    """Temporary files left by a killed earlier run (a normal run removes its own)."""
    for item in items:
        final = out_dir / item.output
        ours = temporary_path(final).name
        for leftover in out_dir.glob(f".{glob.escape(item.output)}.*.part"):
            if leftover.name != ours:
                leftover.unlink(missing_ok=True)
