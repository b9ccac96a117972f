"""The v1 NDJSON frames: typed frame objects, the encoder, and the sans-IO decoder.

The decoder has h11's shape: bytes in (``feed``), frames out, explicit state,
no I/O. The pure-Python decoder here is the reference; ``_fastframe`` (Cython)
must give identical frames and identical errors for every input. ``FrameDecoder``
is the fastest one available; ``BACKEND`` says which (``"cython"`` or
``"python"``); ``ORPHEUS_TRIO_PURE=1`` forces the pure one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pybase64

from .errors import ProtocolError

__all__ = [
    "Chunk",
    "Metrics",
    "EndOfStream",
    "ErrorFrame",
    "Frame",
    "ProtocolError",
    "DEFAULT_MAX_LINE_BYTES",
    "encode_chunk",
    "encode_metrics",
    "encode_eos",
    "encode_error",
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
