"""The failure policy: what one failed attempt means, decided in one place.

Sans-IO and loop-free, in the manner of urllib3's ``Retry``: a small frozen
value that looks at an error and says

- whether another attempt (on another endpoint) may succeed (``retryable``);
- whom it blames (:class:`Blame`): the endpoint (its breaker counts it),
  a busy endpoint (routing steers away, the breaker does not count it), or
  nobody (the request itself, our own limits, a cancellation);
- how well it explains the request's failure when every attempt failed
  (``rank``; :func:`most_relevant` picks by it);
- how long the endpoint asked us to stay away (``Retry-After`` of 429/503).

The client, the race and the gateway all ask this module; none of them
classifies errors on its own.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import (
    HTTP_ERRORS,
    NETWORK_ERRORS,
    POOL_FULL_ERRORS,
    RETRYABLE_STATUS,
    DeadlineExceeded,
    HTTPStatusError,
    OrpheusError,
    ProtocolError,
    ServiceError,
)

__all__ = [
    "BUSY_STATUS",
    "Blame",
    "FailurePolicy",
    "MAX_RETRY_AFTER_S",
    "RETRYABLE_SERVICE_CODES",
    "Verdict",
    "most_relevant",
    "parse_retry_after",
]

E = TypeVar("E", bound=BaseException)

#: Statuses that say "busy" rather than "broken": fail over, but do not trip the breaker.
BUSY_STATUS = frozenset({429, 503})
#: In-band error codes after which another endpoint may do better (before any audio).
RETRYABLE_SERVICE_CODES = frozenset({"engine_error", "internal", "cancelled", "unavailable"})
#: In-band error codes that say the endpoint itself is broken.
_ENDPOINT_SERVICE_CODES = frozenset({"engine_error", "internal"})
#: The longest ``Retry-After`` taken from a server (a larger one is capped to this).
MAX_RETRY_AFTER_S = 3600.0


class Blame(enum.Enum):
    """Whom a failed attempt says something about."""

    ENDPOINT = "endpoint"  # broken: counts against its breaker
    BUSY = "busy"  # overloaded: routing steers away, no breaker count
    NONE = "none"  # the request, our own limits, a cancellation


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one error means for the request and for the endpoint that gave it."""

    retryable: bool
    blame: Blame
    #: Higher explains a failed request better (unexpected errors highest).
    rank: int
    #: Seconds the endpoint asked us to wait (``Retry-After``), if it said.
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """Classifies errors of attempts.

    ``endpoint_fault_status``: statuses (besides 429 and 5xx) that blame the
    endpoint rather than the request (a gateway lists 401: one worker refusing
    its key says nothing of the others): retryable, and counted against it.
    """

    endpoint_fault_status: frozenset[int] = field(default_factory=frozenset)

    def judge(self, error: BaseException) -> Verdict:
        """The verdict on ``error``, raised by an attempt before or after its first audio."""
        if isinstance(error, HTTPStatusError):
            return self._judge_status(error)
        if isinstance(error, DeadlineExceeded):
            return Verdict(retryable=False, blame=Blame.NONE, rank=3)
        if isinstance(error, ServiceError):
            broken = error.code in _ENDPOINT_SERVICE_CODES
            return Verdict(
                retryable=error.code in RETRYABLE_SERVICE_CODES,
                blame=Blame.ENDPOINT if broken else Blame.NONE,
                rank=3,  # the server answered and said what went wrong
            )
        if isinstance(error, POOL_FULL_ERRORS):
            # Our own pool is full: another endpoint may have room; this one did nothing wrong.
            return Verdict(retryable=True, blame=Blame.NONE, rank=1)
        if isinstance(error, (*NETWORK_ERRORS, ProtocolError)):
            rank = 3 if isinstance(error, OrpheusError) else 1
            return Verdict(retryable=True, blame=Blame.ENDPOINT, rank=rank)
        if isinstance(error, OrpheusError):
            return Verdict(retryable=False, blame=Blame.NONE, rank=3)
        if isinstance(error, HTTP_ERRORS):
            return Verdict(retryable=False, blame=Blame.NONE, rank=1)
        return Verdict(retryable=False, blame=Blame.NONE, rank=5)  # unexpected: surface it

    def _judge_status(self, error: HTTPStatusError) -> Verdict:
        status = error.status_code
        if status in BUSY_STATUS and status not in self.endpoint_fault_status:
            return Verdict(
                retryable=True, blame=Blame.BUSY, rank=2, retry_after_s=error.retry_after_s
            )
        if status in RETRYABLE_STATUS:
            return Verdict(retryable=True, blame=Blame.ENDPOINT, rank=2)
        if status in self.endpoint_fault_status:
            return Verdict(retryable=True, blame=Blame.ENDPOINT, rank=4)
        return Verdict(retryable=False, blame=Blame.NONE, rank=4)  # the request: same answer anywhere

    def retryable(self, error: BaseException) -> bool:
        return self.judge(error).retryable

    def blames_endpoint(self, error: BaseException) -> bool:
        return self.judge(error).blame is Blame.ENDPOINT


def most_relevant(errors: Sequence[E]) -> E:
    """The error that explains a failed request best (the latest one among equals).

    Unexpected errors first, then a non-retryable HTTP status (400, 401, ...),
    then errors the server reported (in-band errors, broken streams), then
    retryable statuses (429, 5xx), then network errors. (The rank does not
    depend on ``endpoint_fault_status``: any policy ranks alike.)
    """
    if not errors:
        raise ValueError("no errors to choose from")
    best = errors[0]
    for error in errors[1:]:
        if _DEFAULT.judge(error).rank >= _DEFAULT.judge(best).rank:
            best = error
    return best


_DEFAULT = FailurePolicy()


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """A ``Retry-After`` header in seconds (capped at :data:`MAX_RETRY_AFTER_S`);
    ``None`` when absent or not a finite number >= 0 (an HTTP date included)."""
    try:
        seconds = float(headers.get("retry-after", ""))
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)
