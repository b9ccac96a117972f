"""Reading and checking a synthesis request: plain functions, tested without a server.

Each raises :class:`~.exchange.HTTPError` saying exactly what is wrong, in the
request's terms (docs/server.md, "Errors"); the handler answers it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from .engine import InvalidParam, shown_value
from .exchange import HTTPError, Receive
from .http.state import CURRENT_CONNECTION

__all__ = [
    "SynthesisRequest",
    "check_content_type",
    "check_timeout",
    "json_object",
    "parse_synthesis_body",
    "read_body",
    "valid_unicode",
]

_MISSING = object()
#: An engine's ``validate``: voice and parameters in, normalised parameters out.
Validate = Callable[[str | None, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    """A checked ``/v1/tts/stream`` body; ``params`` is what the engine's ``validate`` returned."""

    text: str
    voice: str | None
    #: The caller's ``timeout_s`` (or the default), capped at the server's limit.
    timeout_s: float
    params: dict[str, Any]


def check_content_type(headers: dict[str, str]) -> None:
    """Synthesis bodies are JSON: 415 for anything else."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPError(
            415,
            "invalid_request",
            f"Content-Type must be application/json, got {media_type or 'none'!r}",
            close=True,
        )


async def read_body(
    headers: dict[str, str], receive: Receive, *, limit: int, read_timeout_s: float
) -> bytes:
    """The whole body: 413 past ``limit`` (from Content-Length before reading, when it
    says so), 408 if it does not arrive within ``read_timeout_s``, 400 if the server
    found its framing broken, 499 if the caller left."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(
            413,
            "body_too_large",
            f"request body of {declared} bytes exceeds the limit of {limit}",
            close=True,
        )
    parts: list[bytes] = []
    size = 0
    with trio.move_on_after(read_timeout_s):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The server ends a body whose framing broke with a disconnect too.
                connection = CURRENT_CONNECTION.get()
                if connection is not None and connection.body_refused is not None:
                    raise HTTPError(400, "invalid_request", connection.body_refused, close=True)
                raise HTTPError(499, "cancelled", "client went away", close=True)
            piece = message.get("body", b"")
            size += len(piece)
            if size > limit:
                raise HTTPError(
                    413,
                    "body_too_large",
                    f"request body exceeds the limit of {limit} bytes",
                    close=True,
                )
            parts.append(piece)
            if not message.get("more_body", False):
                return b"".join(parts)
    raise HTTPError(
        408,
        "request_timeout",
        f"request body not received within {read_timeout_s:g} s",
        close=True,
    )


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object whose strings are all valid Unicode, or a 400."""
    try:
        obj = json.loads(body)
    except ValueError as error:
        raise HTTPError(
            400, "invalid_request", f"body is not valid JSON: {_json_problem(error)}"
        ) from None
    # Deep nesting makes the parser raise RecursionError: bad input, not a bug.
    except RecursionError:
        raise HTTPError(
            400,
            "invalid_request",
            "body is not valid JSON: arrays or objects nested too deeply",
        ) from None
    if not isinstance(obj, dict):
        raise HTTPError(400, "invalid_request", "body must be a JSON object")
    for key, value in obj.items():
        # JSON may escape a lone surrogate ("\ud800"); no engine can encode
        # it, and a 500 would send the client to fail over everywhere.
        if not valid_unicode(key) or not valid_unicode(value):
            raise HTTPError(
                400,
                "invalid_param",
                f"{key!r} holds a lone surrogate (\\uD800-\\uDFFF): not valid Unicode text",
                param=key if valid_unicode(key) else None,
            )
    return obj


def parse_synthesis_body(
    body: bytes,
    *,
    max_text_chars: int,
    default_timeout_s: float,
    max_timeout_s: float,
    validate: Validate,
    resolve_voice: Callable[[str | None], str | None] = lambda voice: voice,
) -> SynthesisRequest:
    """Text, voice, the capped ``timeout_s`` and the engine's normalised parameters.

    ``resolve_voice`` names the voice that speaks (an alias resolved, the default
    named); it raises :class:`InvalidParam` for a voice nobody offers.
    """
    obj = json_object(body)
    text = _text(obj.pop("text", _MISSING), max_text_chars)
    voice = obj.pop("voice", None)
    if voice is not None and not isinstance(voice, str):
        raise HTTPError(
            400,
            "invalid_param",
            f"voice must be a string or null, got {type(voice).__name__}",
            param="voice",
        )
    timeout_s = obj["timeout_s"] = check_timeout(
        obj.get("timeout_s", default_timeout_s), max_timeout_s
    )
    try:
        voice = resolve_voice(voice)
        params = validate(voice, obj)
    except InvalidParam as error:
        raise HTTPError(400, "invalid_param", str(error), param=error.key) from None
    return SynthesisRequest(text, voice, timeout_s, params)


def _text(text: object, max_text_chars: int) -> str:
    if text is _MISSING:
        raise HTTPError(400, "invalid_request", "missing required field 'text'")
    if not isinstance(text, str):
        raise HTTPError(
            400,
            "invalid_param",
            f"text must be a string, got {type(text).__name__}",
            param="text",
        )
    if not text.strip():
        raise HTTPError(400, "invalid_request", "text is empty")
    if len(text) > max_text_chars:
        raise HTTPError(
            413,
            "text_too_long",
            f"text has {len(text)} characters; the limit is {max_text_chars}",
        )
    return text


def check_timeout(value: Any, cap: float) -> float:
    """A positive ``timeout_s``, capped at ``cap`` seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise HTTPError(
            400,
            "invalid_param",
            f"timeout_s must be a positive number, got {shown_value(value)}",
            param="timeout_s",
        )
    # Capped before float(): a 400-digit integer is past float's range.
    return float(min(value, cap))


def valid_unicode(value: object) -> bool:
    """False if a string in ``value`` (nested lists and objects too) has a lone surrogate."""
    pending = [value]  # a loop, not recursion: the body may nest as deep as json allows
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
    return True


def _json_problem(error: ValueError) -> str:
    """What was wrong with a body's JSON, in the request's terms (not Python's)."""
    if "int_max_str_digits" in str(error) or "integer string conversion" in str(error):
        return "a number has more digits than the limit of 4300"
    return str(error)
