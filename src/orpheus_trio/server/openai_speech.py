"""``POST /v1/audio/speech``: OpenAI's speech API over the v1 synthesis path.

A request here *is* a ``/v1/tts/stream`` request in other clothes: this route
translates the OpenAI body (``input``, ``voice``, ``response_format``,
``speed``, ``stream_format``, ...) into the v1 body and hands the exchange to
the server's own synthesis handler, so auth, draining, body limits, read
timeout, validation, admission, deadlines, disconnect handling, metrics and
the access log are the very same code. What goes out is translated back:

- the NDJSON audio frames become the chosen format, encoded as they arrive
  (:mod:`orpheus_trio.audio.formats`, each step in a worker thread), so the first
  bytes leave after the first chunk, not after the utterance;
- ``stream_format: "sse"`` sends OpenAI's events instead: one
  ``speech.audio.delta`` (base64 audio) per encoded piece, then
  ``speech.audio.done``; an error after the start is an ``error`` event;
- a failure after the audio started (deadline, engine error, shutdown) cuts a
  binary body short (the connection drops, so no client mistakes it for the
  whole utterance);
- every error answer before the audio is OpenAI's shape
  ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pybase64
import trio

from ..errors import ProtocolError
from ..audio.formats import (
    CONTENT_TYPES,
    Encoder,
    FormatUnavailable,
    check_format,
    check_speed,
    open_encoder,
    require_codec_library,
)
from ..protocol.frames import Chunk, EndOfStream, ErrorFrame, FrameDecoder
from .exchange import Exchange, Handler, HTTPError, Message, Receive, Send
from .routes import Routes

__all__ = [
    "SPEECH_PATH",
    "SpeechRequest",
    "SpeechRoute",
    "mount",
    "parse_speech_request",
]

SPEECH_PATH = "/v1/audio/speech"
STREAM_FORMATS = ("audio", "sse")
#: OpenAI's body keys this route reads itself; any other key is an engine parameter.
_OPENAI_KEYS = frozenset(
    {"model", "input", "voice", "response_format", "speed", "instructions", "stream_format"}
)


def mount(routes: Routes, synthesize: Handler, max_body_bytes: int) -> None:
    """Mount :data:`SPEECH_PATH` on ``routes``, translating to and from ``synthesize``.

    Its ``prepare`` hook translates every answer on the path from its first
    byte, so auth (401), method (405) and body-limit errors are OpenAI-shaped too.
    """
    routes.mount(
        SPEECH_PATH,
        "POST",
        SpeechRoute(synthesize, max_body_bytes),
        synthesis=True,
        prepare=SpeechRoute.prepare,
    )


@dataclass(frozen=True)
class SpeechRequest:
    """An OpenAI speech request, checked; ``v1_body`` is what the synthesis path gets."""

    format: str
    speed: float
    sse: bool
    model: str | None
    v1_body: dict[str, Any]


def parse_speech_request(body: bytes) -> SpeechRequest:
    """Check an OpenAI speech body; raise :class:`HTTPError` 400 saying what is wrong."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise HTTPError(400, "invalid_request", f"body is not valid JSON: {error}") from None
    if not isinstance(obj, dict):
        raise HTTPError(400, "invalid_request", "body must be a JSON object")
    if "input" not in obj:
        raise HTTPError(
            400, "invalid_request", "missing required field 'input'", param="input"
        )
    if "text" in obj:
        raise HTTPError(
            400, "invalid_param", "send the text as 'input' (OpenAI's name), not 'text'",
            param="text",
        )  # fmt: skip
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise HTTPError(400, "invalid_param", "model must be a string", param="model")
    try:
        format = check_format(obj.get("response_format", "mp3"))
    except ValueError as error:
        raise HTTPError(400, "invalid_param", str(error), param="response_format") from None
    try:
        speed = check_speed(obj.get("speed", 1.0))
    except ValueError as error:
        raise HTTPError(400, "invalid_param", str(error), param="speed") from None
    try:
        require_codec_library(format, speed)
    except FormatUnavailable as error:
        what = "speed other than 1" if format in ("wav", "pcm") else f"{format!r}"
        raise HTTPError(
            400,
            "invalid_param",
            f"{what} is not available on this server: {error}; "
            "response_format wav and pcm at speed 1 work without it",
            param="speed" if format in ("wav", "pcm") else "response_format",
        ) from None
    stream_format = obj.get("stream_format", "audio")
    if stream_format not in STREAM_FORMATS:
        raise HTTPError(
            400, "invalid_param",
            f"unknown stream_format {stream_format!r}; valid: {', '.join(STREAM_FORMATS)}",
            param="stream_format",
        )  # fmt: skip
    instructions = obj.get("instructions")
    if instructions not in (None, ""):
        raise HTTPError(
            400, "invalid_param",
            "this server's voices take no 'instructions'; leave it out (Orpheus reads "
            "emotion tags such as <laugh> inside 'input' instead)",
            param="instructions",
        )  # fmt: skip
    v1_body = {key: value for key, value in obj.items() if key not in _OPENAI_KEYS}
    v1_body["text"] = obj["input"]
    if obj.get("voice") is not None:
        v1_body["voice"] = obj["voice"]
    return SpeechRequest(format, speed, stream_format == "sse", model, v1_body)


class SpeechRoute:
    """The handler the app mounts at :data:`SPEECH_PATH` (``POST``)."""

    def __init__(self, synthesize: Handler, max_body_bytes: int) -> None:
        self._synthesize = synthesize
        self._max_body_bytes = max_body_bytes

    @staticmethod
    def prepare(ex: Exchange) -> None:
        """Translate every answer of this exchange, errors before routing included."""
        ex.send = _Response(ex.send)
        ex.extra["api"] = "openai"

    async def __call__(
        self, headers: dict[str, str], receive: Receive, ex: Exchange
    ) -> None:
        response = ex.send
        assert isinstance(response, _Response), "mount() installs SpeechRoute.prepare"
        translated = _TranslatedReceive(receive, self._max_body_bytes, response, ex.extra)
        try:
            await self._synthesize(headers, translated, ex)
        finally:
            await response.close_encoder()


class _TranslatedReceive:
    """The ASGI ``receive`` the synthesis path reads: the OpenAI body comes out
    as the v1 body (read under the server's own read timeout; an
    :class:`HTTPError` raised here is answered like any other), then whatever
    the client sends next (its disconnect)."""

    def __init__(
        self,
        receive: Receive,
        limit: int,
        response: _Response,
        log_fields: dict[str, Any],
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._response = response
        self._log_fields = log_fields
        self._read = False

    async def __call__(self) -> Message:
        if self._read:
            return dict(await self._receive())
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return dict(message)
            piece = message.get("body", b"")
            parts.append(piece)
            size += len(piece)
            if size > self._limit or not message.get("more_body", False):
                break
        self._read = True
        raw = b"".join(parts)
        if size > self._limit:  # the synthesis path answers 413 for it
            return {"type": "http.request", "body": raw, "more_body": False}
        request = parse_speech_request(raw)
        self._response.request = request
        self._log_fields.update(format=request.format, speed=request.speed, sse=request.sse)
        if request.model is not None:
            self._log_fields["model"] = request.model[:64]
        body = json.dumps(request.v1_body).encode()
        return {"type": "http.request", "body": body, "more_body": False}


class _Response:
    """Turns the synthesis path's ASGI messages into the OpenAI answer."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.request: SpeechRequest | None = None
        self._encoder: Encoder | None = None
        self._encoder_finished = False
        self._decoder = FrameDecoder()
        self._error_start: Message | None = None
        self._ended = False

    async def __call__(self, message: Message) -> None:
        if self._ended:
            return
        if message["type"] == "http.response.start":
            if message["status"] == 200 and self.request is not None:
                await self._start(message)
            else:
                self._error_start = dict(message)  # sent with its rewritten body
            return
        if self._error_start is not None:
            await self._send_error(message)
            return
        await self._relay(message.get("body", b""), more=message.get("more_body", False))

    async def _start(self, message: Message) -> None:
        assert self.request is not None
        request = self.request
        self._encoder = await trio.to_thread.run_sync(
            lambda: open_encoder(request.format, speed=request.speed)
        )
        content_type = (
            "text/event-stream" if self.request.sse else CONTENT_TYPES[self.request.format]
        )
        headers = [(k, v) for k, v in message["headers"] if k.lower() != b"content-type"]
        headers.append((b"content-type", content_type.encode()))
        await self._send({**message, "headers": headers})

    async def close_encoder(self) -> None:
        """The synthesis is over (done, failed or the caller left): close the encoder now.

        PyAV's opus, aac and flac encoders run codec threads until their container
        is closed and freed; an unfinished one sits in a reference cycle until the
        garbage collector runs. Only an error frame may follow, and it needs no encoder.
        """
        encoder, self._encoder = self._encoder, None
        if encoder is not None and not self._encoder_finished:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(encoder.finish)  # what it flushes is dropped

    async def _relay(self, data: bytes, *, more: bool) -> None:
        assert self.request is not None
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as error:  # an engine's malformed line: a bug upstream
            await self._fail("internal", f"bad audio stream: {error}")
            return
        out: list[bytes] = []
        for frame in frames:
            if isinstance(frame, Chunk):
                out.append(await trio.to_thread.run_sync(self._encoding().encode, frame.pcm))
            elif isinstance(frame, EndOfStream):
                out.append(await trio.to_thread.run_sync(self._encoding().finish))
                self._encoder_finished = True
            elif isinstance(frame, ErrorFrame):
                await self._emit(b"".join(out), more=True)
                await self._fail(frame.code, frame.message)
                return
        done = self._decoder.finished
        await self._emit(b"".join(out), more=not done)
        if done:
            self._ended = True

    def _encoding(self) -> Encoder:
        assert self._encoder is not None, "audio comes only between the 200 and the release"
        return self._encoder

    async def _emit(self, audio: bytes, *, more: bool) -> None:
        assert self.request is not None
        if self.request.sse:
            body = _sse_delta(audio) if audio else b""
            if not more:
                body += _sse_event({"type": "speech.audio.done", "usage": _NO_USAGE})
        else:
            body = audio
        if body or not more:
            await self._send({"type": "http.response.body", "body": body, "more_body": more})

    async def _fail(self, code: str, message: str) -> None:
        """After the 200: an SSE ``error`` event, or a binary body cut short."""
        self._ended = True
        assert self.request is not None
        if self.request.sse:
            event = {"type": "error", "error": _error_object(500, code, message, None)}
            await self._send(
                {"type": "http.response.body", "body": _sse_event(event), "more_body": False}
            )
        # Binary: no closing message, so the server drops the connection.

    async def _send_error(self, message: Message) -> None:
        start, self._error_start = self._error_start, None
        assert start is not None
        self._ended = True
        status = int(start["status"])
        try:
            v1 = json.loads(message.get("body", b""))["error"]
            code, text, param = str(v1["code"]), str(v1["message"]), v1.get("param")
        except (ValueError, KeyError, TypeError):
            code, text, param = "internal", "internal error", None
        body = json.dumps({"error": _error_object(status, code, text, param)}).encode()
        headers = [
            (k, v)
            for k, v in start["headers"]
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


_NO_USAGE = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def _error_object(
    status: int, code: str, message: str, param: str | None
) -> dict[str, Any]:
    """OpenAI's error object; ``type`` is its category for ``status``."""
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"message": message, "type": kind, "param": param, "code": code}


def _sse_event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _sse_delta(audio: bytes) -> bytes:
    return _sse_event(
        {"type": "speech.audio.delta", "audio": pybase64.b64encode(audio).decode()}
    )

