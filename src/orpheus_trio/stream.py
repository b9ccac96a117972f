"""One response body as frames, and the winner's audio as the caller reads it.

:class:`FrameReader` is the only code that reads a response body: the race
uses it up to an attempt's first audio, :class:`AudioStream` from there on,
so reading, decoding, ``metrics`` bookkeeping and in-band errors are written
once. The decoder alone knows how many chunks came and whether the stream
ended. Status errors (non-2xx answers) are read here too, into
:class:`~orpheus_trio.errors.HTTPStatusError`.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import anyio

from ._util.callsite import warn_at_caller
from ._policy.body_rate import BodyRate
from ._policy.endpoints import STREAM_PATH
from .errors import (
    DeadlineExceeded,
    HTTPStatusError,
    IncompleteStreamError,
    ServiceError,
    SlowBodyError,
    RunawaySpeechWarning,
    TruncatedSpeechWarning,
)
from ._policy.failure import parse_retry_after
from .protocol.frames import Chunk, EndOfStream, ErrorFrame, Frame, FrameDecoder, Metrics
from .transports.base import ResponseStream

__all__ = ["AudioStream", "Call", "FrameReader", "read_status_error"]

#: Longest error body read from a non-2xx answer.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Longest wait for a non-2xx answer's body.
_ERROR_BODY_TIMEOUT_S = 5.0

Redact = Callable[[str], str]


def _keep(text: str) -> str:
    return text


@dataclass(slots=True)
class Call:
    """One user request: what to send and by when.

    With a ``request_id``, attempt ``n`` (from 1) is sent as ``<request_id>.<n>``.
    """

    body: dict[str, Any]
    started: float
    deadline: float
    request_id: str | None = None
    attempts_sent: int = 0
    #: Only these endpoints may serve it (``None``: any).
    endpoints: frozenset[str] | None = None


async def close_quietly(response: ResponseStream, limit_s: float) -> None:
    """Close a response even while cancelled, giving up after ``limit_s``."""
    with anyio.move_on_after(limit_s, shield=True):
        try:
            await response.aclose()
        except (httpx.HTTPError, OSError, anyio.BrokenResourceError):
            pass  # closing a broken response may fail; the connection is dropped either way


def service_error(frame: ErrorFrame, endpoint: str, redact: Redact = _keep) -> ServiceError:
    """The exception for an in-band ``error`` frame."""
    if frame.code == "deadline_exceeded":
        return DeadlineExceeded(redact(frame.message), endpoint=endpoint)
    return ServiceError(redact(frame.code), redact(frame.message), endpoint=endpoint)


class FrameReader:
    """Frames of one response body, read as they are asked for.

    ``metrics`` frames are merged into :attr:`metrics` (and reported to
    ``on_metrics``) rather than returned; an ``error`` frame raises. Before
    :meth:`hand_over`, network faults pass up as the transport raised them
    (the race classifies them) and the caller's deadline is the race's; after
    it, they become :class:`IncompleteStreamError` and :class:`DeadlineExceeded`.
    """

    def __init__(
        self,
        response: ResponseStream,
        *,
        endpoint: str,
        max_line_bytes: int,
        on_metrics: Callable[[Metrics], None],
        redact: Redact = _keep,
        body_rate: BodyRate | None = None,
    ) -> None:
        self.response = response
        self.endpoint = endpoint
        self.metrics: dict[str, Any] = {}
        self.body_ended = False
        self._decoder = FrameDecoder(max_line_bytes=max_line_bytes)
        self._pending: deque[Frame] = deque()
        self._on_metrics = on_metrics
        self._redact = redact
        self._deadline: float | None = None  # set by hand_over
        self._rate = body_rate

    @property
    def chunks_received(self) -> int:
        return int(self._decoder.chunks_received)

    def hand_over(self, deadline: float) -> None:
        """The audio goes to the caller now: apply its deadline and translate faults."""
        self._deadline = deadline

    def push_back(self, frame: Chunk | EndOfStream) -> None:
        """Return a frame read ahead (the first audio) to the front."""
        self._pending.appendleft(frame)

    async def next_frame(self) -> Chunk | EndOfStream | None:
        """The next chunk or ``eos``; ``None`` once nothing more will come."""
        while True:
            while self._pending:
                frame = self._pending.popleft()
                if isinstance(frame, Metrics):
                    self._on_metrics(frame)
                    self.metrics.update(frame.values)
                elif isinstance(frame, ErrorFrame):
                    raise service_error(frame, self.endpoint, self._redact)
                else:
                    assert isinstance(frame, (Chunk, EndOfStream))
                    return frame
            if self._decoder.finished or self.body_ended:
                return None
            # A bad line that shared the last read with good frames is raised by the
            # decoder's next call: make that call now, not after more bytes come.
            self._decoder.feed(b"")
            data = await self._receive()
            if data:
                self._pending.extend(self._decoder.feed(data))
            else:
                self.body_ended = True
                self._decoder.close()  # raises IncompleteStreamError unless eos/error arrived

    async def _receive(self) -> bytes:
        rate = self._rate
        started = 0.0 if rate is None else anyio.current_time()
        data = await self._receive_by_deadline()
        if rate is not None and not rate.observe(anyio.current_time() - started, len(data)):
            raise SlowBodyError(
                f"{self.endpoint} sent its body slower than {rate.min_bytes} bytes per "
                f"{rate.window_s:g} s (after {self.chunks_received} chunks); raise "
                "min_rate_window_s, or pass min_rate_bytes=None, for a server this slow",
                chunks_received=self.chunks_received,
            )
        return data

    async def _receive_by_deadline(self) -> bytes:
        deadline = self._deadline
        if deadline is None:  # before hand_over: the race's deadline, its fault handling
            return await self.response.receive()
        try:
            if deadline == math.inf:  # no deadline: spare a cancel scope per read
                return await self.response.receive()
            with anyio.CancelScope(deadline=deadline):
                return await self.response.receive()
            raise DeadlineExceeded(
                f"client deadline passed after {self.chunks_received} chunks",
                endpoint=self.endpoint,
            )
        except IncompleteStreamError:
            raise
        except (httpx.ReadError, httpx.RemoteProtocolError) as error:
            raise IncompleteStreamError(
                f"connection to {self.endpoint} broke mid-stream: {error}",
                chunks_received=self.chunks_received,
            ) from error

    async def drain(self, limit_s: float) -> None:
        """After ``eos``, read the HTTP body's end too, else the connection cannot be reused."""
        with anyio.move_on_after(limit_s):
            try:
                while data := await self.response.receive():
                    if data.strip():
                        return  # junk after eos: the connection is not reused
            except (httpx.HTTPError, OSError, anyio.BrokenResourceError):
                return  # the audio is complete; the connection is dropped


#: Called once when an :class:`AudioStream` ends, with the error that ended it (``None``: it did not fail).
Release = Callable[[BaseException | None], None]


class AudioStream:
    """The winning attempt's audio: ``async for pcm in stream`` yields even-length PCM bytes.

    ``endpoint`` won the race, ``request_id`` is its ``X-Request-Id``, ``ttfb_s``
    the time from the request to its first audio (hedges included), ``attempts`` how many
    attempts the race started. ``metrics`` merges the values of every ``metrics``
    frame the winner sent so far (an engine may report ``finish_reason`` and
    ``truncated`` after the audio); when it says ``"truncated": true`` at the end,
    a :class:`~orpheus_trio.errors.TruncatedSpeechWarning` is issued, as on-box
    synthesis does. Audio that arrived is delivered, never retried: a
    chunk that shares a read with a broken line is yielded, then the
    :class:`ProtocolError` raises on the next iteration, with no failover.
    """

    def __init__(
        self,
        reader: FrameReader,
        *,
        request_id: str,
        ttfb_s: float,
        attempts: int,
        deadline: float,
        release: Release,
        close_timeout_s: float,
        warn_truncation: bool = True,
    ) -> None:
        self.endpoint = reader.endpoint
        self.request_id = request_id
        self.ttfb_s = ttfb_s
        self.attempts = attempts
        self.metrics = reader.metrics
        reader.hand_over(deadline)
        self._reader: FrameReader | None = reader
        self._release = release
        self._close_timeout_s = close_timeout_s
        self._warn_truncation = warn_truncation

    def __repr__(self) -> str:
        return (
            f"AudioStream(endpoint={self.endpoint!r}, request_id={self.request_id!r})"
        )

    @property
    def truncated(self) -> bool:
        """The service said the reply was cut short (``max_tokens`` reached)."""
        return self.metrics.get("truncated") is True

    @property
    def runaway(self) -> str | None:
        """Why the service's runaway guard ended the speech (``"loop"``, ``"too_long"``), if it did."""
        value = self.metrics.get("runaway")
        return value if value in ("loop", "too_long") else None

    def __aiter__(self) -> AudioStream:
        return self

    async def __anext__(self) -> bytes:
        reader = self._reader
        if reader is None:  # ended, failed or closed: spent, as a generator is
            raise StopAsyncIteration
        try:
            while isinstance(frame := await reader.next_frame(), Chunk):
                if frame.pcm:
                    return frame.pcm
            if frame is not None and self.truncated and self._warn_truncation:
                warn_at_caller(
                    f"{self.endpoint} cut the speech short "
                    f"(finish_reason {self.metrics.get('finish_reason')!r}): "
                    "the audio stops early",
                    TruncatedSpeechWarning,
                )
            if frame is not None and self.runaway is not None and self._warn_truncation:
                warn_at_caller(
                    f"{self.endpoint} ended the speech early: the model ran away "
                    f"({self.runaway}); the text was most likely spoken before that",
                    RunawaySpeechWarning,
                )
            if not reader.body_ended:
                await reader.drain(self._close_timeout_s)
        except BaseException as error:
            await self._close(error)
            raise
        # The body was read to its end: the connection goes back to the pool.
        await self._close(None)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Close the HTTP stream now (idempotent); the rest of the audio is dropped."""
        await self._close(None)

    async def _close(self, error: BaseException | None) -> None:
        reader = self._reader
        if reader is None:
            return
        self._reader = None
        self._release(error)
        await close_quietly(reader.response, self._close_timeout_s)


async def read_status_error(
    response: ResponseStream,
    endpoint: str,
    request_id: str,
    *,
    redact: Redact = _keep,
    unauthorized_hint: str = "",
) -> HTTPStatusError:
    """Read a non-2xx answer's JSON error body into an :class:`HTTPStatusError`.

    Every text taken from the server passes through ``redact`` (a server may
    echo the ``Authorization`` header it got); a 401's message ends with
    ``unauthorized_hint`` (how to pass a key).
    """
    body = bytearray()
    with anyio.move_on_after(_ERROR_BODY_TIMEOUT_S):
        while len(body) < MAX_ERROR_BODY_BYTES:
            data = await response.receive()
            if not data:
                break
            body += data
    raw = bytes(body)
    decoded = raw.decode("utf-8", "replace")
    redacted = redact(decoded)
    code = f"http_{response.status}"
    message = redact(raw[:200].decode("utf-8", "replace")).strip()
    try:
        error = json.loads(raw)["error"]
        code, message = redact(str(error["code"])), redact(str(error.get("message", "")))
    except (ValueError, KeyError, TypeError):
        pass  # not our JSON error shape: keep the status and a snippet of the body
    request = httpx.Request("POST", endpoint + STREAM_PATH, headers={"X-Request-Id": request_id})
    http_response = httpx.Response(
        response.status,
        headers=[(name, redact(value)) for name, value in response.headers.items()],
        content=raw if redacted == decoded else redacted.encode(),
        request=request,
    )
    return HTTPStatusError(
        status_code=response.status,
        code=code,
        message=message or "(no message)",
        request=request,
        response=http_response,
        retry_after_s=parse_retry_after(response.headers),
        hint=unauthorized_hint if response.status == 401 else "",
    )
