"""The binary audio message: which context it belongs to, then its PCM.

``[n: 1 byte][context_id: n bytes, ASCII][PCM: s16le mono 24 kHz]``. Binary
rather than JSON with base64: base64 adds a third to every byte on the wire
and an encode/decode pass on both ends (bench/realtime.py measures the
difference); the header is 2-65 bytes against a 4-9 KB chunk.
"""

from __future__ import annotations

__all__ = ["FramingError", "decode_audio", "encode_audio"]


class FramingError(ValueError):
    """A binary message that is not ``[n][context_id][even-length PCM]``."""


def encode_audio(context_id: str, pcm: bytes) -> bytes:
    tag = context_id.encode("ascii")
    if not 1 <= len(tag) <= 255:
        raise FramingError("context_id must be 1-255 ASCII bytes")
    return bytes((len(tag),)) + tag + pcm


def decode_audio(message: bytes) -> tuple[str, bytes]:
    """``(context_id, pcm)`` of an audio message (clients and tests use it)."""
    if not message or len(message) < 1 + message[0]:
        raise FramingError("audio message shorter than its header")
    end = 1 + message[0]
    pcm = message[end:]
    if len(pcm) % 2:
        raise FramingError("odd number of PCM bytes")
    return message[1:end].decode("ascii"), bytes(pcm)
