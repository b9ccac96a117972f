"""One access-log line per request, in JSON (docs/server.md, "Logs").

Health polls and scrapes that went well are routine (a gateway asks every
worker's ``/v1/system`` every few seconds): DEBUG, not INFO.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..audio.pcm import SAMPLE_RATE
from .exchange import Exchange

__all__ = ["ACCESS_LOGGER", "log_exchange", "settle"]

ACCESS_LOGGER = "orpheus_trio.server.access"
#: Longest string a log field keeps (a caller's voice, an upstream's id).
_MAX_LOGGED_CHARS = 128

_access_log = logging.getLogger(ACCESS_LOGGER)


def settle(ex: Exchange) -> tuple[int, int | None]:
    """The status the caller really got and the bytes it was sent (``None`` outside
    the run shell): 499 when it left before the answer began or before a byte of it
    left (a half-close, say), whatever the app meant to send."""
    status = ex.status if ex.status is not None else 499
    if ex.connection is None:
        return status, None
    sent = ex.connection.bytes_sent - ex.sent_before
    if sent == 0 and ex.connection.closed and status != 499:
        status, ex.code = 499, ex.code or "client_disconnected"
    return status, sent


def log_exchange(
    ex: Exchange, *, status: int, sent: int | None, now: float, engine: str
) -> None:
    """Log ``ex``'s line: INFO, or DEBUG for a routine answer."""
    routine = not ex.synthesis and status == 200
    level = logging.DEBUG if routine else logging.INFO
    if not _access_log.isEnabledFor(level):
        return  # no record and no JSON for a line nobody will see
    record: dict[str, Any] = {
        "request_id": ex.request_id,
        "method": ex.method,
        "path": ex.path,
        "status": status,
        "code": ex.code,
        "ttfa_ms": (
            None
            if ex.first_audio_at is None
            else round((ex.first_audio_at - ex.received_at) * 1000, 2)
        ),
        "duration_ms": round((now - ex.received_at) * 1000, 2),
        "audio_s": round(ex.samples / SAMPLE_RATE, 4),
        "chunks": ex.chunks,
        "queue_depth": ex.queue_depth,
        "engine": engine,
        "sent_bytes": sent,
        **{key: _clipped(value) for key, value in ex.extra.items()},
    }
    _access_log.log(level, "request %s", json.dumps(record), extra={"request": record})


def _clipped(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_LOGGED_CHARS:
        return f"{value[:_MAX_LOGGED_CHARS]}... ({len(value)} chars)"
    return value
