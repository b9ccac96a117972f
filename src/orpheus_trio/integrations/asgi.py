"""Speech as a Starlette / FastAPI response that reports failures as HTTP statuses.

``StreamingResponse(tts.stream(text))`` sends its ``200`` before the stream has
even been opened, so a bad voice, a refused key or a service that is down all
reach the browser as a ``200`` with an empty body (and the server logs a long
traceback). :func:`speech_response` opens the stream first, racing to the
first audio, and only then commits to a ``200``:

- the service refused the request (``400``, ``401``, ``404``, ``413``, ``422``,
  ``429``): the same status, with ``{"error": {"code", "message"}}`` as the
  service put it (and ``Retry-After`` on a ``429``);
- no endpoint could serve it: ``503 unavailable`` (every circuit breaker open,
  or the service said 503, with ``Retry-After`` when known), ``504
  deadline_exceeded``, or ``502 upstream_failed`` (connection refused, a 5xx,
  a broken stream); the message is written here and names no internal URL:
  the cause is logged, on one line, for the operator;
- the stream fails after audio was sent: the body is left unfinished (no
  final empty chunk), so the server drops the connection and the client sees
  a cut body (``httpx.RemoteProtocolError``, ``curl`` exit 18), never a clean
  but shorter file. One warning line is logged.

It needs Starlette (FastAPI brings it): ``pip install '.[examples]'``.
"""

from __future__ import annotations

import logging
import math
from contextlib import AsyncExitStack
from typing import Any, Literal

import httpx
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from orpheus_trio import (
    AudioStream,
    CircuitOpenError,
    DeadlineExceeded,
    HTTPStatusError,
    OrpheusError,
    OrpheusTTS,
)
from orpheus_trio.audio import wav_header

__all__ = ["SpeechResponse", "speech_response"]

logger = logging.getLogger(__name__)

#: Statuses the caller caused (the same request fails anywhere): passed on as they are.
_CALLER_STATUSES = frozenset({400, 401, 403, 404, 413, 422, 429})

#: The media type of each body :func:`speech_response` can send.
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/L16;rate=24000;channels=1"}


class SpeechResponse(StreamingResponse):
    """A ``200`` carrying an already opened :class:`~orpheus_trio.AudioStream`; closes it when done.

    A failure after the first audio leaves the body unfinished, so the client
    can tell the audio is incomplete.
    """

    def __init__(
        self,
        audio: AudioStream,
        resources: AsyncExitStack,
        *,
        format: Literal["wav", "pcm"] = "wav",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(audio, media_type=MEDIA_TYPES[format], headers=headers)
        self._audio = audio
        self._resources = resources
        self._prefix = wav_header() if format == "wav" else b""  # length unknown: streamed

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if self._prefix:
            await send({"type": "http.response.body", "body": self._prefix, "more_body": True})
        try:
            async for pcm in self._audio:
                await send({"type": "http.response.body", "body": pcm, "more_body": True})
        except (OrpheusError, httpx.HTTPError) as error:
            # No final chunk: the ASGI server closes the connection mid-body.
            logger.warning(
                "speech stream %s failed after audio was sent, body left unfinished: %s",
                self._audio.request_id,
                error,
            )
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._resources.aclose()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _retry_after(seconds: float | None) -> dict[str, str] | None:
    return None if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def error_response(error: Exception) -> JSONResponse:
    """The HTTP answer for a failure before any audio (see the module's docstring)."""
    if isinstance(error, HTTPStatusError) and error.status_code in _CALLER_STATUSES:
        return _error(error.status_code, error.code, error.message, _retry_after(error.retry_after_s))
    logger.warning("speech request failed before any audio: %s", error)
    if isinstance(error, CircuitOpenError):
        return _error(
            503, "unavailable", "the speech service is unavailable", _retry_after(error.retry_in_s)
        )
    if isinstance(error, HTTPStatusError) and error.status_code == 503:
        return _error(
            503, "unavailable", "the speech service is unavailable", _retry_after(error.retry_after_s)
        )
    if isinstance(error, DeadlineExceeded):
        return _error(504, "deadline_exceeded", "the speech service did not answer in time")
    return _error(502, "upstream_failed", "the speech service failed to answer")


async def speech_response(
    tts: OrpheusTTS,
    text: str,
    voice: str | None = None,
    *,
    format: Literal["wav", "pcm"] = "wav",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> Response:
    """Open ``tts``'s stream of ``text`` (up to its first audio), then answer with it.

    A :class:`SpeechResponse` (``200``, chunked ``audio/wav`` or raw PCM) once
    audio is on its way, else a JSON error response with the status that fits.
    ``params`` are :meth:`OrpheusTTS.open_stream`'s.
    """
    resources = AsyncExitStack()
    try:
        audio = await resources.enter_async_context(tts.open_stream(text, voice, **params))
    except (OrpheusError, httpx.HTTPError) as error:
        await resources.aclose()
        return error_response(error)
    except ValueError as error:  # the client's own checks: an empty text
        await resources.aclose()
        return _error(400, "invalid_request", str(error))
    except BaseException:
        await resources.aclose()
        raise
    return SpeechResponse(
        audio,
        resources,
        format=format,
        headers={"X-Request-Id": audio.request_id, **(headers or {})},
    )
