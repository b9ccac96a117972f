"""``orpheus-trio batch FILE --out-dir DIR``: one WAV per line, bounded concurrency, resumable.

A progress line on stderr (items, audio seconds, speed, ETA) redraws in place
on a terminal and is printed at most once a second otherwise. Failures are
listed at the end with their reasons; any failure means exit code 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import TextIO

import httpx
import trio

from .batch_jobs import (
    BatchInputError,
    BatchItem,
    BatchProgress,
    BatchReport,
    parse_items,
    run_batch,
)
from ..errors import OrpheusError
from .interrupt import run_interruptibly
from .options import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConnectionSettings,
    UsageError,
    add_connection_options,
    add_on_box_options,
    add_voice_options,
    api_key_hint,
    connection_settings,
    engine_params,
    http_status,
    positive_int,
    read_text,
    report_failure,
)
from .session import EmbeddedServerUnavailable, open_session, speech

__all__ = ["ProgressDisplay", "run"]

_TTY_REDRAW_S = 0.1
_PLAIN_EVERY_S = 1.0


def run(args: argparse.Namespace) -> int:
    if args.ray is not None or args.dry_run:
        # Imported here: Ray and the pipeline cost nothing to a batch that does not use them.
        from ..integrations.ray.command import run_ray

        return run_ray(args)
    try:
        content = read_text(args.file)
        items = parse_items(content, voice=args.voice, params=engine_params(args))
        settings = connection_settings(args)
    except OSError as error:
        print(
            f"orpheus-trio batch: error: cannot read {args.file}: {error}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except UsageError as error:  # the file's encoding, a flag's value
        print(f"orpheus-trio batch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (BatchInputError, ValueError) as error:
        print(f"orpheus-trio batch: error: {args.file}: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not items:
        print(f"orpheus-trio batch: error: {args.file} holds no items", file=sys.stderr)
        return EXIT_USAGE
    statuses: list[int] = []  # the HTTP status of each item that failed with one, for the hints
    try:
        report = run_interruptibly(_batch, args, items, settings, statuses)
    except PermissionError as error:  # on the lock file: name the folder the user gave
        return report_failure("batch", PermissionError(error.errno, error.strerror, str(args.out_dir)))
    except (OrpheusError, httpx.HTTPError, OSError, EmbeddedServerUnavailable) as error:
        return report_failure("batch", error, api_key=settings.api_key)
    hints = (api_key_hint(status, settings.api_key) for status in sorted(set(statuses)))
    refused = sum(1 for status in statuses if status in REFUSED_FOR_GOOD)
    return _summarize(report, args.out_dir, next((h for h in hints if h), None), refused)


async def _batch(
    args: argparse.Namespace,
    items: list[BatchItem],
    settings: ConnectionSettings,
    statuses: list[int],
) -> BatchReport:
    async with open_session(settings) as session:
        todo = sum(1 for item in items if not (args.out_dir / item.output).exists())
        display = (
            None
            if args.no_progress
            else ProgressDisplay(BatchProgress(todo, trio.current_time()))
        )

        async def synthesize(item: BatchItem) -> AsyncIterator[bytes]:
            audio_stream = speech(
                session,
                item.text,
                item.voice,
                item.params,
                split=args.split,
                prefetch=args.prefetch,
            )
            try:
                async with aclosing(audio_stream) as audio:
                    async for pcm in audio:
                        yield pcm
            except Exception as error:
                status = http_status(error)
                if status is not None:
                    statuses.append(status)
                raise

        def progressed(item: BatchItem, audio_s: float | None) -> None:
            if display is not None and not _cancelled():
                display.progress.item_finished(audio_s)
                display.show(trio.current_time())

        try:
            return await run_batch(
                items,
                args.out_dir,
                synthesize,
                concurrency=args.concurrency,
                on_progress=progressed,
            )
        finally:
            if display is not None and not _cancelled():
                display.close(trio.current_time())


def _cancelled() -> bool:
    """Whether the run is being cancelled (Ctrl-C): then nothing more is drawn."""
    return trio.current_effective_deadline() == -math.inf


class ProgressDisplay:
    """Draws :class:`BatchProgress` on a stream: in place on a terminal, plain lines otherwise."""

    def __init__(self, progress: BatchProgress, stream: TextIO | None = None) -> None:
        self.progress = progress
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._last_shown: float | None = None
        self._drawn = False

    def show(self, now: float) -> None:
        every = _TTY_REDRAW_S if self._tty else _PLAIN_EVERY_S
        finished = self.progress.done == self.progress.total
        if (
            not finished
            and self._last_shown is not None
            and now - self._last_shown < every
        ):
            return
        self._last_shown = now
        self._draw(self.progress.render(now))

    def _draw(self, line: str) -> None:
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self, now: float) -> None:
        if self._tty and self._drawn:
            self._draw(self.progress.render(now))
            self._stream.write("\n")
            self._stream.flush()


#: Statuses that the same request gets again however often it is sent: the item itself
#: (its text, voice or parameters) must change. 401 is not here: a key fixes it.
REFUSED_FOR_GOOD = frozenset({400, 404, 413, 422})


def _summarize(report: BatchReport, out_dir: Path, hint: str | None = None, refused: int = 0) -> int:
    """The closing lines; ``refused``: how many failed items the service refused for good."""
    err = sys.stderr
    print(
        f"orpheus-trio batch: {len(report.written)} written, {len(report.skipped)} skipped (already complete), "
        f"{len(report.failed)} failed; {report.audio_s:.1f} s of audio in {out_dir}",
        file=err,
    )
    for failure in report.failed:
        item = failure.item
        print(f"  FAILED line {item.line} -> {item.output}: {failure.reason}", file=err)
    if report.failed:
        if refused:
            print(
                f"orpheus-trio batch: the service refused {refused} item(s) as they are "
                "(a 4xx status): fix their text, voice or parameters; running again as is "
                "would fail the same way",
                file=err,
            )
        if refused < len(report.failed):
            then = f"{hint}, then run" if hint else "run"  # said once, not after every item
            print(
                f"orpheus-trio batch: {then} the same command again to retry only the failed items",
                file=err,
            )
        return EXIT_FAILED
    return EXIT_OK
