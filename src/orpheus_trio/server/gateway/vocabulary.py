"""The gateway's own vocabulary: what of a worker's words it re-emits, checked.

A worker, or a proxy in front of it, is on the far side of a trust boundary:
what it writes may echo the gateway's upstream key, hold markup, or be
anything at all. So no text a worker wrote is passed on as text. The gateway
parses each field it uses and rebuilds it from its own vocabulary: names that
match :data:`NAME`, counts, booleans, codes from a fixed set, messages it
writes itself. Nothing is left to redact, and no answer depends on the key,
so a caller cannot use the gateway as a guessing oracle (docs/reliability.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import trio

from ...voices import is_voice_name

__all__ = [
    "NAME",
    "OUTCOME_METRICS",
    "POLL_ERRORS",
    "checked_count",
    "checked_name",
    "outcome_metrics",
    "poll_error",
    "poll_error_detail",
]

#: A voice, engine or finish-reason name: a letter or digit (any script), then
#: up to 63 letters, digits, ``_``, ``.`` or ``-``. No spaces, quotes, markup,
#: ``:`` or ``/``, so no header (``Bearer ...``), sentence or URL is a name.
NAME = re.compile(r"[^\W_][\w.\-]{0,63}")
#: The largest count re-emitted (JSON numbers past this lose precision anyway).
_MAX_COUNT = 2**53


def checked_name(value: Any) -> str | None:
    """``value`` when it is a string matching :data:`NAME`, else ``None``."""
    return value if isinstance(value, str) and NAME.fullmatch(value) else None


def checked_count(value: Any) -> int | None:
    """``value`` when it is a non-negative JSON integer (``true`` is no count)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT:
        return value
    return None


def _checked_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _checked_runaway(value: Any) -> str | None:
    """Why the worker's runaway guard ended the speech: one of its two words."""
    return value if value in ("loop", "too_long") else None


#: The ``metrics`` keys a worker reports about its answer that the gateway passes
#: on (the caller must learn that ``max_tokens`` or the runaway guard cut the speech), with the check
#: each value must pass. The worker's load and timings are not the gateway's,
#: and any other key is dropped.
OUTCOME_METRICS: Mapping[str, Callable[[Any], Any]] = {
    "finish_reason": checked_name,
    "truncated": _checked_bool,
    "tokens": checked_count,
    "frames": checked_count,
    "dropped_tokens": checked_count,
    "voice": lambda value: value if is_voice_name(value) else None,
    "runaway": _checked_runaway,
}


def outcome_metrics(values: Mapping[str, Any]) -> dict[str, Any]:
    """The whitelisted keys of a worker's ``metrics`` frames whose values pass their check."""
    kept: dict[str, Any] = {}
    for key, check in OUTCOME_METRICS.items():
        if key in values and (value := check(values[key])) is not None:
            kept[key] = value
    return kept


#: What ``/v1/system`` says of a worker's last poll that failed: a category, never
#: the error's text (which may hold the worker's words or addresses).
POLL_ERRORS = frozenset(
    {"not_polled", "connect_failed", "timeout", "bad_status", "bad_body", "broken_connection"}
)


def poll_error(error: BaseException) -> str:
    """The category of a failed ``/v1/system`` poll (one of :data:`POLL_ERRORS`)."""
    if isinstance(error, trio.TooSlowError | httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "connect_failed"
    if isinstance(error, httpx.HTTPStatusError):
        return "bad_status"
    if isinstance(error, httpx.HTTPError):
        return "broken_connection"
    return "bad_body"  # not JSON, not a /v1/system object, too large or too deep


def poll_error_detail(error: BaseException) -> str:
    """A failed poll in words, for the operator's log only: the error and the
    system's reasons under it (``Connection refused``), which httpx's own
    message ("all attempts to connect ... failed") leaves out."""
    reasons: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror and cause.strerror not in reasons:
            reasons.append(cause.strerror)
        if isinstance(cause, BaseExceptionGroup):
            pending.extend(cause.exceptions)
        if (under := cause.__cause__ or cause.__context__) is not None:
            pending.append(under)
    because = f" ({', '.join(reasons)})" if reasons else ""
    return f"{type(error).__name__}: {error}{because}"
