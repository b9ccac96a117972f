"""``orpheus-trio speak "text" -o out.wav``: one text to one audio file, or to stdout.

WAV and raw PCM are written as they are; mp3, opus (Ogg), aac and flac are
encoded as the audio arrives (:mod:`orpheus_trio.audio.formats`, in a worker thread).

Reports on stderr the time to first audio, the audio duration and the
endpoint(s) that served it. A file is written under a temporary name and
renamed at the end, so a failed run leaves nothing under the final name.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import trio

try:
    import fcntl
except ImportError:  # not POSIX: a WAV on standard output keeps its unknown-length header
    fcntl = None  # type: ignore[assignment]

from ..audio.pcm import ORPHEUS_FORMAT, WavWriter, temporary_path, wav_header
from ..errors import OrpheusError
from ..audio.formats import FORMATS, Encoder, FormatUnavailable, open_encoder, require_codec_library
from .interrupt import run_interruptibly
from .options import (
    EXIT_CODES,
    EXIT_OK,
    ConnectionSettings,
    UsageError,
    add_connection_options,
    add_on_box_options,
    add_voice_options,
    connection_settings,
    engine_params,
    given_api_key,
    read_text,
    report_failure,
    text_argument,
)
from .session import EmbeddedServerUnavailable, PieceServed, open_session, speech

__all__ = ["run"]

#: Failures that end a command with exit code 1 and a one-line message (not a traceback).
COMMAND_ERRORS = (
    OrpheusError,
    httpx.HTTPError,
    OSError,
    EmbeddedServerUnavailable,
    UsageError,
    ValueError,
    FormatUnavailable,
)


@dataclass(frozen=True, slots=True)
class SpeakResult:
    audio_s: float
    first_audio_s: float | None
    total_s: float
    #: The embedded server's engine; ``None`` when a remote service spoke.
    session_engine: str | None
    served: list[PieceServed]
    #: A WAV written where its header could not be patched (a pipe): sizes say "unknown".
    wav_length_unknown: bool = False


def run(args: argparse.Namespace) -> int:
    try:
        text = read_text("-") if args.text == "-" else text_argument(args.text)
        if not text.strip():
            raise UsageError("the text is empty")
        settings = connection_settings(args)
        params = engine_params(args)
        fmt = args.format or _default_format(args.output)
        try:
            require_codec_library(fmt)
        except FormatUnavailable as error:
            raise UsageError(f"--format {fmt}: {error}") from None
        if args.output == "-" and sys.stdout.isatty():
            raise UsageError(
                "standard output is a terminal: redirect it (> file, | player) or use -o FILE"
            )
        result = run_interruptibly(_speak, args, text, settings, params, fmt)
    except COMMAND_ERRORS as error:
        return report_failure("speak", error, api_key=given_api_key(args))
    if not args.quiet:
        _report(result, args.output, fmt)
    return EXIT_OK


async def _speak(
    args: argparse.Namespace,
    text: str,
    settings: ConnectionSettings,
    params: dict[str, Any],
    fmt: str,
) -> SpeakResult:
    async with open_session(settings) as session:
        started = trio.current_time()
        first_audio: float | None = None
        raw = fmt if fmt in ("wav", "pcm") else "pcm"
        writer = _StdoutSink(raw) if args.output == "-" else _FileSink(Path(args.output), raw)
        sink = writer if fmt == raw else _EncodingSink(writer, open_encoder(fmt))
        try:
            audio_stream = speech(
                session,
                text,
                args.voice,
                params,
                split=args.split,
                prefetch=args.prefetch,
            )
            async with aclosing(audio_stream) as audio:
                async for pcm in audio:
                    if first_audio is None:
                        first_audio = trio.current_time() - started
                    await sink.write(pcm)
            await sink.finish()
        finally:
            sink.abort()
        return SpeakResult(
            audio_s=sink.data_bytes
            / ORPHEUS_FORMAT.frame_bytes
            / ORPHEUS_FORMAT.sample_rate,
            first_audio_s=first_audio,
            total_s=trio.current_time() - started,
            session_engine=session.engine,
            served=list(session.served),
            wav_length_unknown=fmt == "wav" and isinstance(writer, _StdoutSink) and not writer.patchable,
        )


#: File suffixes that name a format other than their own.
_SUFFIX_FORMATS = {"ogg": "opus", "raw": "pcm"}


def _default_format(output: str) -> str:
    """pcm for stdout; for a file the format its suffix names (``.ogg`` opus, ``.raw`` pcm), wav
    for a name without one. Any other suffix is refused: writing WAV under ``.m4a`` would
    only surprise the player that opens it."""
    if output == "-":
        return "pcm"
    suffix = Path(output).suffix.lower().removeprefix(".")
    if not suffix:
        return "wav"
    fmt = _SUFFIX_FORMATS.get(suffix, suffix)
    if fmt not in FORMATS:
        known = ", ".join(f".{name}" for name in (*FORMATS, *_SUFFIX_FORMATS))
        raise UsageError(
            f"cannot tell the format of {output} from .{suffix}: name the file with one of "
            f"{known}, or give --format ({', '.join(FORMATS)})"
        )
    return fmt


class _EncodingSink:
    """Encodes PCM (in a worker thread) and hands the bytes to a raw sink."""

    def __init__(self, inner: _FileSink | _StdoutSink, encoder: Encoder) -> None:
        self._inner = inner
        self._encoder = encoder
        self.data_bytes = 0  # PCM bytes, for the report's duration

    async def write(self, pcm: bytes) -> None:
        data = await trio.to_thread.run_sync(self._encoder.encode, pcm)
        self.data_bytes += len(pcm)
        if data:
            await self._inner.write_encoded(data)

    async def finish(self) -> None:
        tail = await trio.to_thread.run_sync(self._encoder.finish)
        if tail:
            await self._inner.write_encoded(tail)
        await self._inner.finish()

    def abort(self) -> None:
        self._inner.abort()


class _FileSink:
    """Writes to a temporary name beside the target; ``finish`` renames it into place."""

    def __init__(self, path: Path, fmt: str) -> None:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot write {path}: no folder {path.parent}")
        if path.is_dir():
            raise IsADirectoryError(f"cannot write {path}: it is a folder")
        self._final = path
        self._tmp = temporary_path(path)
        try:
            self._file: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 (closed by finish/abort)
        except OSError as error:  # name the user's path, not the hidden temporary one
            raise type(error)(error.errno, error.strerror, str(path)) from None
        self._wav = WavWriter(self._file) if fmt == "wav" else None
        self._renamed = False
        self.data_bytes = 0

    async def write(self, pcm: bytes) -> None:
        if self._wav is not None:
            self._wav.write(pcm)
        else:
            self._file.write(pcm)
        self.data_bytes += len(pcm)

    async def write_encoded(self, data: bytes) -> None:
        self._file.write(data)

    async def finish(self) -> None:
        if self._wav is not None:
            self._wav.close()
        self._file.close()
        os.replace(self._tmp, self._final)
        self._renamed = True

    def abort(self) -> None:
        """Unless ``finish`` renamed the file into place, remove the partial file."""
        if not self._renamed:
            self._file.close()
            self._tmp.unlink(missing_ok=True)


class _StdoutSink:
    """Writes to standard output from a worker thread, so a slow reader (a player) never blocks Trio.

    A WAV header on a pipe says "unknown length"; when standard output is a
    regular file (``> out.wav``) the real sizes are patched in at the end, as
    a file written with ``-o`` has them.
    """

    def __init__(self, fmt: str) -> None:
        self._out = sys.stdout.buffer
        self._pending_header = wav_header(ORPHEUS_FORMAT) if fmt == "wav" else b""
        self._header_at = _patchable_position(self._out) if fmt == "wav" else None
        self.data_bytes = 0

    @property
    def patchable(self) -> bool:
        """Whether the WAV header gets the true sizes at the end (a regular file, not a pipe)."""
        return self._header_at is not None

    async def _send(self, data: bytes) -> None:
        write: Callable[[bytes], object] = self._out.write
        await trio.to_thread.run_sync(write, data)

    async def write(self, pcm: bytes) -> None:
        if len(pcm) % ORPHEUS_FORMAT.frame_bytes:
            raise ValueError(f"chunk of {len(pcm)} bytes is not whole 16-bit samples")
        await self._send(self._pending_header + pcm)
        self._pending_header = b""
        self.data_bytes += len(pcm)

    async def write_encoded(self, data: bytes) -> None:
        await self._send(data)

    async def finish(self) -> None:
        if (
            self._pending_header
        ):  # no audio at all: still a valid (empty) WAV
            await self._send(self._pending_header)
        await trio.to_thread.run_sync(self._finish_file)

    def _finish_file(self) -> None:
        if self._header_at is not None:
            end = self._out.tell()
            self._out.seek(self._header_at)
            self._out.write(wav_header(ORPHEUS_FORMAT, self.data_bytes))
            self._out.seek(end)
        self._out.flush()

    def abort(self) -> None:
        return None


def _patchable_position(out: BinaryIO) -> int | None:
    """Where the header will start, if ``out`` is a file we may rewrite it in.

    Not on pipes and terminals (they cannot seek), and not on a file opened
    for appending (``>>``), where every write lands at the end.
    """
    if fcntl is None:
        return None
    try:
        if not out.seekable() or fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_APPEND:
            return None
        return out.tell()
    except (OSError, ValueError, AttributeError):  # no real descriptor (tests, IDEs)
        return None


def _report(result: SpeakResult, output: str, fmt: str) -> None:
    where = "standard output" if output == "-" else output
    lines = [
        f"wrote {where}: {result.audio_s:.2f} s of audio ({fmt}, 24000 Hz, mono"
        + (", 16-bit)" if fmt in ("wav", "pcm") else ")")
    ]
    if result.first_audio_s is not None:
        speed = result.audio_s / result.total_s if result.total_s > 0 else 0.0
        lines.append(
            f"time to first audio {result.first_audio_s:.3f} s, total {result.total_s:.3f} s "
            f"({speed:.1f}x real time)"
        )
    endpoints = sorted({piece.endpoint for piece in result.served})
    label = f" (embedded {result.session_engine} server)" if result.session_engine else ""
    pieces = f", {len(result.served)} pieces" if len(result.served) > 1 else ""
    if endpoints:
        request = (
            f", request {result.served[0].request_id}"
            if len(result.served) == 1
            else ""
        )
        lines.append(f"endpoint {', '.join(endpoints)}{label}{pieces}{request}")
    if result.wav_length_unknown:
        lines.append(
            "the WAV went to a pipe, so its header says 'unknown length' (sizes 0xFFFFFFFF): "
            "players and ffmpeg read it to the end, Python's wave module reports 89478 s; "
            "-o FILE (or > FILE) writes the true sizes"
        )
    for line in lines:
        print(f"orpheus-trio: {line}", file=sys.stderr)
