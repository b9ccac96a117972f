"""On-box synthesis: Orpheus tokens to SNAC codes to PCM (extra ``local``: torch, snac).

Names are imported lazily so that ``import orpheus_trio.local`` (and the
torch-free :mod:`.tokens`) work without torch installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batching import BatchingDecoder
    from .snac_decoder import SnacDecoder, UnsupportedSnacConfig, float_to_pcm16
    from .stream_decode import (
        DecodeWindow,
        StreamingDecoder,
        StreamPlanner,
        pcm_from_tokens,
    )
    from .tokens import (
        FrameAssembler,
        IncompleteFrame,
        InvalidAudioToken,
        codes_from_token_ids,
        deinterleave,
        parse_custom_tokens,
        token_ids_from_codes,
    )

_EXPORTS = {
    "BatchingDecoder": "batching",
    "SnacDecoder": "snac_decoder",
    "UnsupportedSnacConfig": "snac_decoder",
    "float_to_pcm16": "snac_decoder",
    "DecodeWindow": "stream_decode",
    "StreamPlanner": "stream_decode",
    "StreamingDecoder": "stream_decode",
    "pcm_from_tokens": "stream_decode",
    "FrameAssembler": "tokens",
    "IncompleteFrame": "tokens",
    "InvalidAudioToken": "tokens",
    "codes_from_token_ids": "tokens",
    "deinterleave": "tokens",
    "parse_custom_tokens": "tokens",
    "token_ids_from_codes": "tokens",
}

__all__ = [
    "BatchingDecoder",
    "DecodeWindow",
    "FrameAssembler",
    "IncompleteFrame",
    "InvalidAudioToken",
    "SnacDecoder",
    "StreamPlanner",
    "StreamingDecoder",
    "UnsupportedSnacConfig",
    "codes_from_token_ids",
    "deinterleave",
    "float_to_pcm16",
    "parse_custom_tokens",
    "pcm_from_tokens",
    "token_ids_from_codes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
