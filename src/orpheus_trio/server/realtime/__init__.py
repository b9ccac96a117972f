"""The realtime WebSocket API (``GET /v1/tts/realtime``): text in as it is written, audio out.

:mod:`.session` holds one socket's state (sans-IO), :mod:`.framing` the
binary audio message, :mod:`.socket` the wsproto shell the HTTP server hands
an upgraded connection to. docs/protocol.md, "Realtime WebSocket", is the contract.
"""

from .framing import FramingError, decode_audio, encode_audio
from .session import Limits
from .socket import KEY_SUBPROTOCOL_PREFIX, REALTIME_PATH, SUBPROTOCOL, RealtimeEndpoint

__all__ = [
    "KEY_SUBPROTOCOL_PREFIX",
    "REALTIME_PATH",
    "SUBPROTOCOL",
    "FramingError",
    "Limits",
    "RealtimeEndpoint",
    "decode_audio",
    "encode_audio",
]
