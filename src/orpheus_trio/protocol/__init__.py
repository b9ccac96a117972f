"""The v1 NDJSON frames (docs/protocol.md): typed frames, encoders, and the sans-IO decoder,
fast in Cython (:mod:`._fastframe`) with a pure-Python twin that behaves the same.
``BACKEND`` says which decoder is active (``"cython"`` or ``"python"``)."""

from .frames import (
    BACKEND,
    Chunk,
    EndOfStream,
    ErrorFrame,
    Frame,
    FrameDecoder,
    Metrics,
    PythonFrameDecoder,
)

__all__ = [
    "BACKEND",
    "Chunk",
    "EndOfStream",
    "ErrorFrame",
    "Frame",
    "FrameDecoder",
    "Metrics",
    "PythonFrameDecoder",
]
