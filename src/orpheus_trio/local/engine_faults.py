"""What an inference engine's failures become: the v1 error a worker answers with (sans-IO).

The engine is an upstream: its error text (a 400's body, an SSE ``error:``
event) may echo the worker's ``Authorization`` header, its own URLs, or
anything else. So nothing it wrote reaches a caller: a fault is one of the
:class:`Fault` kinds below or an HTTP status class, and the caller's answer is
built from this module's own vocabulary (a v1 code, an HTTP status, a fixed
message). The engine's text goes to the worker's log only (see
:mod:`.engine_client`), redacted there too.
"""

from __future__ import annotations

import enum

from ..errors import OrpheusError

__all__ = ["EngineRequestError", "Fault", "fault_error", "status_error"]


class EngineRequestError(OrpheusError):
    """The engine could not be reached, refused the request, or its stream broke.

    ``code``/``status``: the v1 error a server answers with before any audio;
    ``message``: written here, never the engine's text; ``retry_after_s``: the
    engine's ``Retry-After``, if it sent a valid one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        retry_after_s: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(f"{code}: {message}")


class Fault(enum.Enum):
    """How an engine's stream went wrong (each with the caller's message)."""

    UNREACHABLE = "the inference engine is unreachable"
    REQUEST_FAILED = "the request to the inference engine failed"
    STREAM_BROKE = "the inference engine's stream broke"
    NO_FINISH = "the inference engine's stream ended without a finish reason (cut short)"
    DONE_WITHOUT_FINISH = "the inference engine's stream ended ([DONE]) without a finish reason"
    NOT_JSON = "the inference engine sent an event that is not JSON"
    NOT_AN_OBJECT = "the inference engine sent an event that is not a JSON object"
    BAD_CHOICE = "the inference engine sent a malformed choice"
    ERROR_EVENT = "the inference engine reported an error mid-stream"
    BAD_FINISH = "the inference engine ended the reply abnormally"
    EVENT_TOO_LARGE = "the inference engine sent an oversized event: not a completions stream"
    FORM_CHANGED = "the inference engine changed how it sends tokens (ids or text) mid-service"


def fault_error(fault: Fault) -> EngineRequestError:
    """The v1 error for ``fault``: 503 ``unavailable`` when the engine cannot be reached
    (clients fail over), else 502 ``engine_error``."""
    if fault is Fault.UNREACHABLE:
        return EngineRequestError("unavailable", fault.value, status=503)
    return EngineRequestError("engine_error", fault.value, status=502)


def status_error(status: int, retry_after_s: float | None = None) -> EngineRequestError:
    """The v1 error for an engine's non-200 answer to a completions request.

    The engine's status class decides: it refused the request's values (400,
    413, 422) -> 400 ``invalid_request``; at capacity (429) -> 429
    ``overloaded``; loading or down (503) -> 503 ``unavailable``; anything else
    (its credentials refused, an unknown model or path, a crash) is the
    worker's or the engine's fault, not the caller's -> 502 ``engine_error``.
    """
    if status in (400, 413, 422):
        return EngineRequestError(
            "invalid_request",
            f"the inference engine refused the request ({status}): the text may be too long "
            "for its context, or a parameter out of its range",
            status=400,
        )
    if status == 429:
        return EngineRequestError(
            "overloaded",
            "the inference engine is at capacity (429)",
            status=429,
            retry_after_s=1.0 if retry_after_s is None else retry_after_s,
        )
    if status == 503:
        return EngineRequestError(
            "unavailable",
            "the inference engine is not ready (503)",
            status=503,
            retry_after_s=retry_after_s,
        )
    if status in (401, 403):
        reason = "refused the worker's credentials"
    elif status == 404:
        reason = "does not serve this model or endpoint"
    else:
        reason = "failed"
    return EngineRequestError(
        "engine_error", f"the inference engine {reason} ({status})", status=502
    )
