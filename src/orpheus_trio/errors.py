"""The exception hierarchy users catch.

Every error the library raises on purpose derives from :class:`OrpheusError`.
Where an error has a well-known counterpart elsewhere, it also derives from
that, so code written against httpx, asyncio or trio keeps working:

- :class:`HTTPStatusError` is an ``httpx.HTTPStatusError`` (4xx/5xx before streaming);
- :class:`IncompleteStreamError` is an ``httpx.RemoteProtocolError`` (a cut stream);
- :class:`SlowBodyError` is an ``httpx.ReadTimeout`` (a body that trickles);
- :class:`DeadlineExceeded` is a ``TimeoutError`` (so ``asyncio.TimeoutError``) and
  a ``trio.TooSlowError``;
- :class:`CircuitOpenError` is a ``RuntimeError``.

Network errors (``httpx.ConnectError``, ``httpx.ReadTimeout``, ...) are raised
with their httpx types.
"""

from __future__ import annotations

import httpx
import trio

__all__ = [
    "OrpheusError",
    "ProtocolError",
    "IncompleteStreamError",
    "SlowBodyError",
    "ServiceError",
    "DeadlineExceeded",
    "HTTPStatusError",
    "CircuitOpenError",
    "TruncatedSpeechWarning",
    "RunawaySpeechWarning",
    "RETRYABLE_STATUS",
    "NETWORK_ERRORS",
    "POOL_FULL_ERRORS",
    "HTTP_ERRORS",
]

#: The network errors the transports raise, named here so the sans-IO failure policy
#: classifies them without importing an HTTP library itself: any transport failure,
#: our own connection pool being full, and any HTTP-level error at all.
NETWORK_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError,)
POOL_FULL_ERRORS: tuple[type[Exception], ...] = (httpx.PoolTimeout,)
HTTP_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError,)

#: Statuses after which another endpoint may give a different answer.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class OrpheusError(Exception):
    """Base class of every error orpheus-trio raises on purpose."""


class ProtocolError(OrpheusError):
    """The byte stream broke the v1 NDJSON contract.

    ``line`` is the 1-based line number in the response body (``None`` when the
    fault is not tied to one line); ``reason`` says what was wrong.
    """

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"protocol error: {where}{reason}")

    def __reduce__(self) -> tuple[type[ProtocolError], tuple[str, int | None]]:
        return (type(self), (self.reason, self.line))

    def __eq__(self, other: object) -> bool:
        # Equal errors let the Cython and Python decoders be compared directly.
        return (
            type(other) is type(self)
            and isinstance(other, ProtocolError)
            and (other.reason, other.line) == (self.reason, self.line)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.reason, self.line))


class IncompleteStreamError(OrpheusError, httpx.RemoteProtocolError):
    """The stream ended (connection cut, or body ended) without ``eos`` or ``error``.

    Audio already yielded stays yielded; this says the rest never came.
    ``chunks_received`` counts the chunks that did arrive.
    """

    def __init__(self, message: str, *, chunks_received: int = 0) -> None:
        self.chunks_received = chunks_received
        super().__init__(message)


class SlowBodyError(OrpheusError, httpx.ReadTimeout):
    """The response body came slower than the client's minimum rate
    (``min_rate_bytes`` per ``min_rate_window_s`` of waiting), though never silent
    long enough for the read timeout. Before any audio the request fails over.
    """

    def __init__(self, message: str, *, chunks_received: int = 0) -> None:
        self.chunks_received = chunks_received
        super().__init__(message)


class ServiceError(OrpheusError):
    """The service ended the stream with an in-band ``error`` frame."""

    def __init__(self, code: str, message: str, *, endpoint: str | None = None) -> None:
        self.code = code
        self.message = message
        self.endpoint = endpoint
        where = f" from {endpoint}" if endpoint else ""
        super().__init__(f"{code}{where}: {message}")


class DeadlineExceeded(ServiceError, trio.TooSlowError, TimeoutError):
    """The request's deadline passed, on the server (``deadline_exceeded``) or on the client."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__("deadline_exceeded", message, endpoint=endpoint)


class HTTPStatusError(OrpheusError, httpx.HTTPStatusError):
    """A non-2xx answer before any audio, with the server's error ``code`` and ``message``.

    ``hint``, if any, ends the text: what to do about it (a 401: how to pass a key).
    """

    def __init__(
        self,
        *,
        status_code: int,
        code: str,
        message: str,
        request: httpx.Request,
        response: httpx.Response,
        retry_after_s: float | None = None,
        hint: str = "",
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        httpx.HTTPStatusError.__init__(
            self,
            f"{status_code} {code}: {message} ({request.method} {request.url})"
            + (f"; {hint}" if hint else ""),
            request=request,
            response=response,
        )

    @property
    def retryable(self) -> bool:
        """Whether another endpoint might answer differently (429, 500, 502, 503, 504)."""
        return self.status_code in RETRYABLE_STATUS


class CircuitOpenError(OrpheusError, RuntimeError):
    """Every candidate endpoint's circuit breaker is open; nothing was sent."""

    def __init__(self, endpoints: list[str], retry_in_s: float | None = None) -> None:
        self.endpoints = list(endpoints)
        self.retry_in_s = retry_in_s
        names = ", ".join(endpoints)
        hint = f"; next probe allowed in {retry_in_s:.1f} s" if retry_in_s is not None else ""
        super().__init__(f"Circuit open for endpoint {names}{hint}")


class TruncatedSpeechWarning(UserWarning):
    """The model hit ``max_tokens`` before it finished speaking: the audio stops early.

    Issued by on-box synthesis, and by the network client when the service's
    ``metrics`` frame says ``"truncated": true``.
    """


class RunawaySpeechWarning(UserWarning):
    """The runaway guard ended the speech early: its frames looped, or it ran far
    past what its text needs (the metrics frame's ``runaway``: ``"loop"`` or
    ``"too_long"``). The text was most likely spoken in full before that.

    Issued by on-box synthesis and by the network client. Ask for
    ``runaway="error"`` to get an error instead, ``runaway="off"`` for no guard.
    """
