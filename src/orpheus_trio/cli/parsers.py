"""The argument parsers of the client commands (``speak``, ``batch``, ``system``).

Kept apart from the commands themselves, and light to import (the standard
library and :mod:`.options`), so that ``--help`` and a bad flag answer at
once: httpx, Trio and numpy are loaded only for a command that runs. Each
parser names the module whose ``run(args) -> int`` does the work
(:func:`.dispatch.main` imports it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeAlias

from .options import (
    EXIT_CODES,
    add_connection_options,
    add_on_box_options,
    add_voice_options,
    http_url,
    positive_float,
    positive_int,
)

__all__ = ["SPEAK_FORMATS", "register_batch", "register_speak", "register_system"]

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: ``speak --format`` and the suffixes it understands: :data:`orpheus_trio.audio.formats.FORMATS`
#: (a test keeps the two equal; that module loads numpy).
SPEAK_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def register_speak(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "speak",
        help="say one text into an audio file (or stdout)",
        description="Synthesize TEXT and write it to a file or standard output. With no --url "
        "(and no $ORPHEUS_URLS) an embedded server is started on 127.0.0.1 for the run: espeak, "
        "or your Orpheus checkpoint with --model and --snac.",
        epilog='examples:\n  orpheus-trio speak "Hello from Orpheus." -o hello.wav\n'
        "  orpheus-trio speak - -o - --format pcm < story.txt | aplay -f S16_LE -r 24000 -c 1\n"
        '  orpheus-trio speak "Hi" -o hi.wav --url http://gpu1:8000 --url http://gpu2:8000\n\n'
        + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("text", help='the text to say; "-" reads it from standard input')
    parser.add_argument(
        "-o", "--output", required=True, metavar="PATH",
        help='file to write, or "-" for standard output',
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=SPEAK_FORMATS, default=None,
        help="pcm is raw s16le mono 24 kHz (the default for stdout); opus is Ogg Opus, "
        "aac is ADTS; default for a file: the format its suffix names (.wav, .mp3, .opus or "
        ".ogg, .aac, .flac, .pcm or .raw); any other suffix needs --format",
    )  # fmt: skip
    add_connection_options(parser)
    add_on_box_options(parser)
    add_voice_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no report on stderr")
    parser.set_defaults(run_module="orpheus_trio.cli.speak")


def register_batch(subparsers: Subparsers) -> None:
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
    parser.add_argument("file", metavar="FILE", help='the items; "-" reads standard input')
    parser.add_argument(
        "-d", "--out-dir", type=Path, default=Path("."), help="where the WAV files go (default .)"
    )
    parser.add_argument(
        "-c", "--concurrency", type=positive_int, default=4,
        help="items in flight at once (default 4)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    add_connection_options(parser)
    add_on_box_options(parser)
    add_voice_options(parser)
    _add_ray_options(parser)
    parser.set_defaults(run_module="orpheus_trio.cli.batch")


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


def register_system(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "system",
        help="print a service's /v1/system",
        description="Print GET URL/v1/system as JSON: engine, voices, queue depth, capacity, limits. "
        "Without URL: the first of $ORPHEUS_URLS, else an embedded espeak server.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "url", nargs="?", type=http_url, help="service base URL, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument(
        "--api-key", metavar="KEY", help="sent as a Bearer token; default: $ORPHEUS_KEY"
    )
    parser.add_argument(
        "--timeout-s", type=positive_float, default=10.0, metavar="S", help="default 10"
    )
    parser.set_defaults(run_module="orpheus_trio.cli.system", urls=[], hedge_ms=None)
