"""The v1 NDJSON frames: typed frame objects, the encoder, and the sans-IO decoder.

The decoder has h11's shape: bytes in (``feed``), frames out, explicit state,
no I/O. The pure-Python decoder here is the reference; ``_fastframe`` (Cython)
must give identical frames and identical errors for every input. ``FrameDecoder``
is the fastest one available; ``BACKEND`` says which (``"cython"`` or
``"python"``); ``ORPHEUS_TRIO_PURE=1`` forces the pure one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import pybase64

from .errors import IncompleteStreamError, ProtocolError

__all__ = [
    "BACKEND",
    "DEFAULT_MAX_LINE_BYTES",
    "Chunk",
    "EndOfStream",
    "ErrorFrame",
    "Frame",
    "FrameDecoder",
    "Metrics",
    "ProtocolError",
    "PythonFrameDecoder",
    "encode_chunk",
    "encode_eos",
    "encode_error",
    "encode_metrics",
]

#: Longest NDJSON line a decoder accepts by default (4 MiB), terminator excluded.
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class Chunk:
    """Audio: ``seq`` counts from 0; ``pcm`` is s16le mono 24 kHz, even length."""

    seq: int
    pcm: bytes


@dataclass(slots=True)
class Metrics:
    """Routing hints (``queue_depth``, ``inflight``, ``capacity``, ``ttfb_ms``, ...)."""

    values: dict[str, Any]


@dataclass(slots=True)
class EndOfStream:
    """The stream ended normally after ``chunks`` chunks holding ``samples`` samples."""

    chunks: int
    samples: int


@dataclass(slots=True)
class ErrorFrame:
    """The stream ended with an in-band error."""

    code: str
    message: str


Frame = Chunk | Metrics | EndOfStream | ErrorFrame


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encode_chunk(seq: int, pcm: bytes) -> bytes:
    """One ``chunk`` line, newline included."""
    if len(pcm) % 2:
        raise ValueError(f"PCM must hold whole 16-bit samples, got {len(pcm)} bytes")
    return b'{"type":"chunk","seq":%d,"audio":"%s"}\n' % (seq, pybase64.b64encode(pcm))


def encode_metrics(**values: Any) -> bytes:
    """One ``metrics`` line, newline included."""
    return _line({"type": "metrics", **values})


def encode_eos(chunks: int, samples: int) -> bytes:
    """The closing ``eos`` line, newline included."""
    return _line({"type": "eos", "chunks": chunks, "samples": samples})


def encode_error(code: str, message: str) -> bytes:
    """The closing ``error`` line, newline included."""
    return _line({"type": "error", "code": code, "message": message})


# --- Decoding -----------------------------------------------------------------
#
# Rules shared by both decoders live in the functions below (JSON loading, field
# checks, every error message), so the Cython decoder raises exactly what this
# module raises: it calls them for every line outside its fast path.

#: Bytes a blank line may hold (its ``\n`` aside).
_BLANK = b" \t\r"
_WHITESPACE = b" \t\r\n"
_CR = 13

_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(line: bytes, lineno: int) -> Any:
    """Parse one line as strict JSON (UTF-8, no NaN/Infinity)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})", lineno
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"invalid JSON: {exc.msg} (column {exc.colno})", lineno
        ) from None
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {exc}", lineno) from None
    except RecursionError:
        raise ProtocolError("invalid JSON: nested too deeply", lineno) from None


def _str_field(obj: dict[str, Any], name: str, kind: str, lineno: int) -> str:
    value = obj.get(name)
    if isinstance(value, str):
        return value
    raise _field_error(obj, name, kind, "a string", lineno)


def _int_field(obj: dict[str, Any], name: str, kind: str, lineno: int) -> int:
    value = obj.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _field_error(obj, name, kind, "an integer", lineno)


def _field_error(
    obj: dict[str, Any], name: str, kind: str, expected: str, lineno: int
) -> ProtocolError:
    if name not in obj:
        return ProtocolError(f"{kind} frame has no {name!r} field", lineno)
    return ProtocolError(
        f"{kind} field {name!r} must be {expected}, got {_json_type(obj[name])}", lineno
    )


def _frame_from_object(obj: Any, lineno: int) -> Frame | None:
    """Check one parsed line's fields; ``None`` for a frame type this version does not know."""
    if not isinstance(obj, dict):
        raise ProtocolError(
            f"frame must be a JSON object, got {_json_type(obj)}", lineno
        )
    kind = _str_field(obj, "type", "the", lineno)
    if kind == "chunk":
        seq = _int_field(obj, "seq", kind, lineno)
        audio = _str_field(obj, "audio", kind, lineno)
        try:
            pcm = pybase64.b64decode(audio, validate=True)
        except ValueError:
            raise ProtocolError(
                "chunk field 'audio' is not strict base64 (only A-Z a-z 0-9 + /, '=' padding required)",
                lineno,
            ) from None
        if len(pcm) % 2:
            raise ProtocolError(
                f"chunk audio holds {len(pcm)} bytes, not a whole number of 16-bit samples",
                lineno,
            )
        return Chunk(seq, pcm)
    if kind == "metrics":
        return Metrics({key: value for key, value in obj.items() if key != "type"})
    if kind == "eos":
        return EndOfStream(
            _int_field(obj, "chunks", kind, lineno),
            _int_field(obj, "samples", kind, lineno),
        )
    if kind == "error":
        return ErrorFrame(
            _str_field(obj, "code", kind, lineno),
            _str_field(obj, "message", kind, lineno),
        )
    return None


def _parse_line(line: bytes, lineno: int) -> Frame | None:
    """The exact (reference) reading of one non-blank line, its terminator removed."""
    return _frame_from_object(_load_json(line, lineno), lineno)


def _too_long_error(max_line_bytes: int, lineno: int) -> ProtocolError:
    return ProtocolError(
        f"line longer than the limit of {max_line_bytes} bytes", lineno
    )


def _seq_error(expected: int, got: int, lineno: int) -> ProtocolError:
    return ProtocolError(
        f"chunk seq out of order: expected {expected}, got {got}", lineno
    )


def _totals_error(
    chunks: int, samples: int, eos: EndOfStream, lineno: int
) -> ProtocolError:
    return ProtocolError(
        f"eos totals do not match the stream: expected chunks={chunks} samples={samples} "
        f"(what arrived), got chunks={eos.chunks} samples={eos.samples}",
        lineno,
    )


def _after_end_error(lineno: int) -> ProtocolError:
    return ProtocolError("data after end of stream", lineno)


def _incomplete_error(pending_line: int | None, chunks: int) -> IncompleteStreamError:
    if pending_line is not None:
        return IncompleteStreamError(
            f"stream ended inside line {pending_line} (no terminating newline) "
            f"without an eos or error frame, after {chunks} chunks",
            chunks_received=chunks,
        )
    return IncompleteStreamError(
        f"stream ended without an eos or error frame, after {chunks} chunks",
        chunks_received=chunks,
    )


def _check_max_line_bytes(max_line_bytes: int) -> None:
    if (
        isinstance(max_line_bytes, bool)
        or not isinstance(max_line_bytes, int)
        or max_line_bytes < 1
    ):
        raise ValueError(
            f"max_line_bytes must be a positive integer, got {max_line_bytes!r}"
        )


class PythonFrameDecoder:
    """Turns the bytes of a v1 NDJSON body into frames (sans-IO, pure Python reference).

    ``feed`` takes pieces split anywhere and returns the frames of every line it
    completed. Lines end with ``\\n`` (a ``\\r`` before it is dropped); lines of only
    spaces, tabs and ``\\r`` are skipped; line numbers count every line from 1.
    ``max_line_bytes`` bounds a line, terminator excluded; a longer line is rejected
    as soon as it grows past the limit, so memory stays bounded.

    Any breach of the contract raises :class:`ProtocolError` naming the line:
    invalid UTF-8 or JSON, a non-object, a missing or ill-typed field, audio that is
    not strict base64 or holds an odd byte count, a ``seq`` gap or repeat, ``eos``
    totals that differ from what arrived, or any non-blank byte after ``eos`` or
    ``error`` (raised as soon as that byte arrives). The first error fails the
    decoder. ``feed`` returns every frame completed before the bad line, so what
    reaches the caller never depends on how the body was split: if the piece
    completed good frames first, they are returned and the error is raised by the
    next call (an empty ``feed`` will do); otherwise it is raised at once. Every
    later ``feed``/``close`` raises an equal error. Nothing of a bad line, and no
    frame after it, is ever returned. An ``error`` frame is returned as
    :class:`ErrorFrame`, not raised.

    ``close`` marks the end of the body and raises :class:`IncompleteStreamError`
    unless ``eos`` or ``error`` arrived. It is strict about the last line: one
    without its ``\\n`` counts as cut off, even if it parses, because ``close``
    returns no frames and accepting it silently could swallow an ``error`` frame.
    Closing again repeats the outcome; ``feed`` after ``close`` is a ``RuntimeError``.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        _check_max_line_bytes(max_line_bytes)
        self.max_line_bytes = max_line_bytes
        self._pending = bytearray()  # the unterminated line so far
        self._lines = 0  # lines completed (terminated) so far
        self._chunks = 0
        self._samples = 0
        self._finished = False
        self._closed = False
        self._failure: ProtocolError | None = None

    @property
    def finished(self) -> bool:
        """Whether the closing ``eos`` or ``error`` frame has arrived."""
        return self._finished

    @property
    def chunks_received(self) -> int:
        return self._chunks

    @property
    def samples_received(self) -> int:
        return self._samples

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decode the next piece of the body; return the frames of the lines it completed.

        A bad line after good frames in this piece is raised by the next call instead.
        """
        self._check_usable()
        if self._closed:
            raise RuntimeError("feed() called after close()")
        frames: list[Frame] = []
        try:
            self._feed(
                data if isinstance(data, bytes) else bytes(memoryview(data)), frames
            )
        except ProtocolError as exc:
            self._failure = exc
            if not frames:
                raise
        return frames

    def close(self) -> None:
        """End of body: raise :class:`IncompleteStreamError` unless ``eos``/``error`` arrived."""
        self._check_usable()
        self._closed = True
        if self._finished:
            return
        pending_line = self._lines + 1 if self._pending.strip(_BLANK) else None
        raise _incomplete_error(pending_line, self._chunks)

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise ProtocolError(self._failure.reason, self._failure.line)

    def _feed(self, data: bytes, frames: list[Frame]) -> None:
        start = 0
        if self._finished:
            self._check_trailing(data, start)
            return
        if self._pending:
            newline = data.find(b"\n")
            if newline < 0:
                self._hold(data, 0)
                return
            ends_cr = (data[newline - 1] if newline else self._pending[-1]) == _CR
            self._check_length(len(self._pending) + newline, ends_cr, self._lines + 1)
            self._pending += data[:newline]
            line = bytes(self._pending)
            self._pending.clear()
            self._line(line, frames)
            start = newline + 1
        while not self._finished:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._hold(data, start)
                return
            self._line(data[start:newline], frames)
            start = newline + 1
        self._check_trailing(data, start)

    def _check_length(self, raw_len: int, ends_cr: bool, lineno: int) -> None:
        # A trailing \r may be the first half of a \r\n terminator: it does not count.
        if raw_len - ends_cr > self.max_line_bytes:
            raise _too_long_error(self.max_line_bytes, lineno)

    def _hold(self, data: bytes, start: int) -> None:
        """Keep the unterminated tail of ``data``, refusing to grow past the line limit."""
        if start == len(data):
            return
        self._check_length(
            len(self._pending) + len(data) - start, data[-1] == _CR, self._lines + 1
        )
        self._pending += memoryview(data)[start:]

    def _line(self, line: bytes, frames: list[Frame]) -> None:
        self._lines += 1
        lineno = self._lines
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line_bytes:
            raise _too_long_error(self.max_line_bytes, lineno)
        if not line.strip(_BLANK):
            return
        frame = _parse_line(line, lineno)
        if frame is None:
            return
        if isinstance(frame, Chunk):
            if frame.seq != self._chunks:
                raise _seq_error(self._chunks, frame.seq, lineno)
            self._chunks += 1
            self._samples += len(frame.pcm) // 2
        elif isinstance(frame, EndOfStream):
            if frame.chunks != self._chunks or frame.samples != self._samples:
                raise _totals_error(self._chunks, self._samples, frame, lineno)
            self._finished = True
        elif isinstance(frame, ErrorFrame):
            self._finished = True
        frames.append(frame)

    def _check_trailing(self, data: bytes, start: int) -> None:
        """After the end, only whitespace may follow; count its lines to name the culprit."""
        rest = data[start:]
        leftover = rest.lstrip(_WHITESPACE)
        if leftover:
            offending = len(rest) - len(leftover)
            raise _after_end_error(self._lines + 1 + rest.count(b"\n", 0, offending))
        self._lines += rest.count(b"\n")


def _fastest_decoder() -> tuple[type[PythonFrameDecoder], str]:
    if os.environ.get("ORPHEUS_TRIO_PURE") == "1":
        return PythonFrameDecoder, "python"
    try:
        from ._fastframe import FastFrameDecoder
    except ImportError:
        return PythonFrameDecoder, "python"
    return FastFrameDecoder, "cython"


if TYPE_CHECKING:
    # Both decoders share one interface; type checkers see the reference one.
    FrameDecoder = PythonFrameDecoder
    BACKEND: str
else:
    FrameDecoder, BACKEND = _fastest_decoder()
