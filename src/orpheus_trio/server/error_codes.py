"""The contract's error codes and the JSON error answer (docs/server.md, "Errors")."""

from __future__ import annotations

import json
import math
from typing import Any

from .exchange import Exchange, HTTPError

__all__ = [
    "ERROR_CODES",
    "MAX_RETRY_AFTER_S",
    "error_label",
    "retry_after_header",
    "send_error",
]

#: The error codes the contract documents (docs/server.md); any other code an
#: engine or an upstream reports is counted as ``other``, so the metric's
#: label set stays bounded whatever they send.
ERROR_CODES = frozenset(
    {
        "invalid_request",
        "invalid_param",
        "unauthorized",
        "not_found",
        "text_too_long",
        "body_too_large",
        "request_timeout",
        "overloaded",
        "unavailable",
        "draining",
        "internal",
        "deadline_exceeded",
        "engine_error",
        "cancelled",
        "upstream_error",
    }
)
#: The longest ``Retry-After`` the server sends (a sane wait, and a short header).
MAX_RETRY_AFTER_S = 3600


def error_label(code: str) -> str:
    """The ``code`` label for ``orpheus_errors_total``: documented codes only."""
    return code if code in ERROR_CODES else "other"


def retry_after_header(seconds: float | None) -> bytes | None:
    """A ``Retry-After`` value: whole seconds, at most :data:`MAX_RETRY_AFTER_S`;
    ``None`` for no number of seconds to wait (NaN, negative)."""
    if seconds is None or not seconds >= 0:
        return None
    return str(math.ceil(min(seconds, MAX_RETRY_AFTER_S))).encode()


async def send_error(ex: Exchange, error: HTTPError) -> None:
    """Answer ``error`` as ``{"error": {"code", "message", "param"?}}`` with its headers."""
    ex.code = error.code
    payload: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.param is not None:
        payload["param"] = error.param
    headers = [(b"content-type", b"application/json")]
    retry_after = retry_after_header(error.retry_after_s)
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    if error.close:
        headers.append((b"connection", b"close"))
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    body = json.dumps({"error": payload}).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await ex.start(error.status, headers)
    await ex.write(body, more=False)
