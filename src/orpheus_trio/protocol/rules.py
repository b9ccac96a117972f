"""The v1 frame rules both decoders share: what a frame is and what makes a line one.

``frames.PythonFrameDecoder`` and the Cython ``_fastframe.FastFrameDecoder``
import this module, so they build the same frame objects and raise the same
errors: the Cython decoder reads plain chunk lines itself and hands every other
line to :func:`parse_line`, the exact reading. Users import these names from
:mod:`orpheus_trio.protocol.frames`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import pybase64

from ..errors import IncompleteStreamError, ProtocolError

#: Longest NDJSON line a decoder accepts by default (4 MiB), terminator excluded.
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class Chunk:
    """Audio: ``seq`` counts from 0; ``pcm`` is s16le mono 24 kHz, even length."""

    seq: int
    pcm: bytes


@dataclass(slots=True)
class ChunkLine:
    """A relaying decoder's chunk: the checked line itself, not its audio.

    ``line`` is a valid plain chunk line, ``\\n`` included, holding ``samples``
    samples: the received line as it was when it was already in the plain form
    (``{"type":"chunk","seq":N,"audio":"..."}``), else the same audio encoded
    afresh in that form. A gateway writes it on as it is.
    """

    seq: int
    line: bytes
    samples: int


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


Frame = Chunk | ChunkLine | Metrics | EndOfStream | ErrorFrame


def encode_chunk(seq: int, pcm: bytes) -> bytes:
    """One ``chunk`` line in the plain form, newline included."""
    if len(pcm) % 2:
        raise ValueError(f"PCM must hold whole 16-bit samples, got {len(pcm)} bytes")
    return b'{"type":"chunk","seq":%d,"audio":"%s"}\n' % (seq, pybase64.b64encode(pcm))


#: A chunk line exactly as the Cython decoder reads it in place (seq up to 18
#: digits); a relaying decoder forwards such a line unchanged.
_PLAIN_CHUNK = re.compile(
    rb'\{"type":"chunk","seq":(?:0|[1-9][0-9]{0,17}),"audio":"[A-Za-z0-9+/=]*"\}'
)

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


def _frame_from_object(obj: Any, lineno: int) -> Chunk | Metrics | EndOfStream | ErrorFrame | None:
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


def parse_line(line: bytes, lineno: int, relay: bool = False) -> Frame | None:
    """The exact (reference) reading of one non-blank line, its terminator removed.

    ``relay``: a chunk comes back as a :class:`ChunkLine` (see there).
    """
    frame = _frame_from_object(_load_json(line, lineno), lineno)
    if relay and isinstance(frame, Chunk):
        if _PLAIN_CHUNK.fullmatch(line):
            return ChunkLine(frame.seq, line + b"\n", len(frame.pcm) // 2)
        return ChunkLine(frame.seq, encode_chunk(frame.seq, frame.pcm), len(frame.pcm) // 2)
    return frame


def too_long_error(max_line_bytes: int, lineno: int) -> ProtocolError:
    return ProtocolError(
        f"line longer than the limit of {max_line_bytes} bytes", lineno
    )


def seq_error(expected: int, got: int, lineno: int) -> ProtocolError:
    return ProtocolError(
        f"chunk seq out of order: expected {expected}, got {got}", lineno
    )


def totals_error(
    chunks: int, samples: int, eos: EndOfStream, lineno: int
) -> ProtocolError:
    return ProtocolError(
        f"eos totals do not match the stream: expected chunks={chunks} samples={samples} "
        f"(what arrived), got chunks={eos.chunks} samples={eos.samples}",
        lineno,
    )


def after_end_error(lineno: int) -> ProtocolError:
    return ProtocolError("data after end of stream", lineno)


def incomplete_error(pending_line: int | None, chunks: int) -> IncompleteStreamError:
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


def check_max_line_bytes(max_line_bytes: int) -> None:
    if (
        isinstance(max_line_bytes, bool)
        or not isinstance(max_line_bytes, int)
        or max_line_bytes < 1
    ):
        raise ValueError(
            f"max_line_bytes must be a positive integer, got {max_line_bytes!r}"
        )
