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

__all__ = ["ProgressDisplay", "register", "run"]

_TTY_REDRAW_S = 0.1
_PLAIN_EVERY_S = 1.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="say many texts into one WAV each",
        description="Synthesize every item of FILE into OUT_DIR. FILE holds plain text, one item per "
        'line (written as 0001.wav, 0002.wav, ...), or JSON Lines: {"text": ..., "voice": ..., '
        '"params": {...}, "output": "name.wav"}; blank lines and lines starting with # are skipped. '
        "Outputs that already exist are skipped, so an interrupted batch resumes where it stopped.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file", metavar="FILE", help='the items; "-" reads standard input'
    )
    parser.add_argument(
        "-d",
        "--out-dir",
        type=Path,
        default=Path("."),
        help="where the WAV files go (default .)",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=positive_int,
        default=4,
        help="items in flight at once (default 4)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    add_connection_options(parser)
    add_on_box_options(parser)
    add_voice_options(parser)
    _add_ray_options(parser)
    parser.set_defaults(run=run)


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Ray Data (the ray extra; docs/batch.md)",
        "With --ray the batch runs as a Ray Data pipeline on --model/--snac (or --llm-url): "
        "FILE may be .jsonl, .csv, .parquet or text; files ID.FORMAT and manifest.jsonl go to --out-dir.",
    )
    group.add_argument(
        "--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
        help='run on Ray: a cluster address ("auto", "ray://host:10001") or, bare, a local Ray',
    )
    group.add_argument(
        "--ray-engine", choices=("vllm", "transformers"), default="vllm",
        help="what generates with --model: vLLM through ray.data.llm (default) or transformers",
    )
    group.add_argument(
        "--ray-format", default="flac", choices=("flac", "wav", "mp3", "opus"), help="audio files (default flac)"
    )
    group.add_argument("--decode-actors", type=positive_int, default=1, help="SNAC decode actors (default 1)")
    group.add_argument(
        "--decode-gpus", type=float, default=0.0, metavar="N", help="GPUs per decode actor (default 0: CPU)"
    )
    group.add_argument(
        "--llm-concurrency", type=positive_int, default=1,
        help="vLLM engines, transformers actors or engine clients (default 1)",
    )
    group.add_argument(
        "--dry-run", action="store_true", help="estimate audio hours and generation time; synthesize nothing"
    )
    group.add_argument(
        "--tokens-per-second", type=float, default=1000.0, metavar="N",
        help="with --dry-run: one engine's generation throughput (default 1000)",
    )


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
    statuses: set[int] = set()  # the HTTP statuses items failed with, for the hint at the end
    try:
        report = run_interruptibly(_batch, args, items, settings, statuses)
    except PermissionError as error:  # on the lock file: name the folder the user gave
        return report_failure("batch", PermissionError(error.errno, error.strerror, str(args.out_dir)))
    except (OrpheusError, httpx.HTTPError, OSError, EmbeddedServerUnavailable) as error:
        return report_failure("batch", error, api_key=settings.api_key)
    hints = (api_key_hint(status, settings.api_key) for status in sorted(statuses))
    return _summarize(report, args.out_dir, next((h for h in hints if h), None))


async def _batch(
    args: argparse.Namespace,
    items: list[BatchItem],
    settings: ConnectionSettings,
    statuses: set[int],
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
                    statuses.add(status)
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


def _summarize(report: BatchReport, out_dir: Path, hint: str | None = None) -> int:
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
        then = f"{hint}, then run" if hint else "run"  # said once, not after every item
        print(
            f"orpheus-trio batch: {then} the same command again to retry only the failed items",
            file=err,
        )
        return EXIT_FAILED
    return EXIT_OK
