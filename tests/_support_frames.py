"""Shared helpers for the frame decoder tests: every decoder built here, and a driver."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orpheus_trio.errors import IncompleteStreamError, ProtocolError
from orpheus_trio.protocol.frames import Frame, PythonFrameDecoder

try:
    from orpheus_trio.protocol._fastframe import FastFrameDecoder
except ImportError:  # extension not built: the Python decoder is still tested
    DECODERS: list[Any] = [PythonFrameDecoder]
else:
    DECODERS = [PythonFrameDecoder, FastFrameDecoder]

DECODER_IDS = [cls.__name__ for cls in DECODERS]


def run_decoder(
    cls: Any, pieces: Iterable[bytes], *, close: bool = True, **kwargs: Any
) -> tuple[list[Frame], ProtocolError | IncompleteStreamError | None]:
    """Feed every piece, then close; return the frames and the error that stopped it (if any)."""
    decoder = cls(**kwargs)
    frames: list[Frame] = []
    try:
        for piece in pieces:
            frames.extend(decoder.feed(piece))
        if close:
            decoder.close()
    except (ProtocolError, IncompleteStreamError) as exc:
        return frames, exc
    return frames, None


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (sorted, clipped, duplicates giving empty pieces)."""
    pieces, start = [], 0
    for cut in sorted(min(max(c, 0), len(data)) for c in cuts):
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces
