"""The ASGI app speaking the v1 contract for any :class:`~.engine.Engine`.

Routing, auth, body and parameter validation, admission, NDJSON streaming,
deadlines, client-disconnect cancellation, draining, metrics and one access
log line per request. It never knows which engine it runs, so a gateway can
reuse it by passing an engine that forwards upstream.

Response headers wait for the engine's first piece: an engine that fails
before any audio (with a status) gets a real non-2xx answer, and the first
byte of the body is the first audio.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import trio

from ..audio.pcm import SAMPLE_RATE
from ..protocol.frames import encode_chunk, encode_eos, encode_error, encode_metrics
from .admission import Admission, Rejected, Ticket
from .config import ServerConfig
from .engine import (
    CURRENT_REQUEST,
    AbortStream,
    ChunkLines,
    Engine,
    EngineError,
    Hints,
    InvalidParam,
    RawLine,
    RequestContext,
    emotion_tags,
    shown_value,
)
from .http.state import CURRENT_CONNECTION, ConnectionState
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics

__all__ = ["ACCESS_LOGGER", "SAMPLE_RATE", "OrpheusApp", "create_app"]

ACCESS_LOGGER = "orpheus_trio.server.access"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[dict[str, str], Receive, "_Exchange"], Awaitable[None]]

_access_log = logging.getLogger(ACCESS_LOGGER)
_error_log = logging.getLogger("orpheus_trio.server")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
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
#: Longest string a log field keeps (a caller's voice, an upstream's id).
_MAX_LOGGED_CHARS = 128
_MISSING = object()
#: Paths that synthesize: they need the API key and count in the request metrics.
_SYNTHESIS_PATHS = frozenset({"/v1/tts/stream", "/v1/audio/speech"})


class HTTPError(Exception):
    """Answer with ``status`` and the contract's JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        #: The request body was not read to the end, so the connection must close.
        self.close = close
        super().__init__(f"{status} {code}: {message}")


@dataclass
class _Exchange:
    """One request's response state and the facts its log line reports."""

    send: Send
    request_id: str
    method: str
    path: str
    received_at: float
    status: int | None = None
    code: str | None = None
    started: bool = False
    finished: bool = False
    first_audio_at: float | None = None
    chunks: int = 0
    samples: int = 0
    queue_depth: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The connection it came on (None outside the run shell) and what that
    #: connection had sent before this answer began.
    connection: ConnectionState | None = None
    sent_before: int = 0

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.started = True
        headers.append((b"x-request-id", self.request_id.encode()))
        with trio.CancelScope(shield=True):
            await self.send(
                {"type": "http.response.start", "status": status, "headers": headers}
            )

    async def write(self, data: bytes, *, more: bool = True) -> None:
        self.finished = not more
        # Shielded so a deadline never splits a frame (the server's own socket
        # write is shielded anyway); a client that left makes this return at once.
        with trio.CancelScope(shield=True):
            await self.send(
                {"type": "http.response.body", "body": data, "more_body": more}
            )


class OrpheusApp:
    """The ASGI callable. ``metrics`` and ``admission`` are public for the run shell.

    A gateway passes ``upstream_load`` (the queue depth its best upstream would
    give a request now) and ``system_extra`` (fields added to ``/v1/system``).
    """

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig,
        *,
        clock: Callable[[], float] = trio.current_time,
        upstream_load: Callable[[], float] | None = None,
        system_extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self._upstream_load = upstream_load
        self._system_extra = system_extra
        self.metrics = ServerMetrics()
        self.metrics.capacity.set(config.max_concurrency)
        self.admission = Admission(config.max_concurrency, config.max_queue)
        self._turns: dict[Ticket, trio.Event] = {}
        #: One scope per admitted request, so shutdown can end them all cleanly.
        self._streams: set[trio.CancelScope] = set()
        self._idle = trio.Event()
        self._idle.set()
        self._keys = tuple(key.encode() for key in config.api_keys)
        #: path -> (the methods it accepts, space-separated; its handler)
        self._routes: dict[str, tuple[str, Handler]] = {
            "/v1/tts/stream": ("POST", self._tts),
            "/v1/system": ("GET", self._system),
            "/metrics": ("GET", self._metrics),
        }
        #: path -> a hook that sees each exchange first (before auth and routing)
        self._prepare: dict[str, Callable[[_Exchange], None]] = {}
        from .openai_speech import mount  # (it builds on this module)

        mount(self, self._routes, self._prepare)
        from .voice_upload import mount as mount_voices  # POST/DELETE /v1/voices (issue 32)

        mount_voices(self, self._routes)

    # -- draining ----------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self.admission.draining

    def start_draining(self) -> None:
        """Stop admitting: new synthesis requests get 503 ``draining``."""
        self.admission.draining = True

    async def wait_idle(self) -> None:
        """Return once no request is queued or running."""
        await self._idle.wait()

    def cancel_streams(self) -> None:
        """End every admitted request now, each with an in-band ``cancelled`` frame."""
        for scope in self._streams:
            scope.cancel()

    # -- ASGI entry ----------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = _headers(scope)
        connection = CURRENT_CONNECTION.get()
        exchange = _Exchange(
            send=send,
            request_id=_request_id(headers.get("x-request-id")),
            method=scope["method"],
            path=scope["path"],
            received_at=self.clock(),
            connection=connection,
            sent_before=0 if connection is None else connection.bytes_sent,
        )
        prepare = self._prepare.get(exchange.path)
        if prepare is not None:
            prepare(exchange)
        token = CURRENT_REQUEST.set(RequestContext(exchange.request_id, exchange.extra))
        try:
            await self._route(scope, headers, receive, exchange)
        except HTTPError as error:
            await self._send_error(exchange, error)
        except Exception:  # noqa: BLE001 - a bug in one request must not take the server down
            _error_log.exception("request %s failed", exchange.request_id)
            if not exchange.started:
                await self._send_error(
                    exchange, HTTPError(500, "internal", "internal error")
                )
            else:
                await self._end_with_error(exchange, "internal", "internal error")
        finally:
            CURRENT_REQUEST.reset(token)
            self._log(exchange)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(
        self,
        scope: Scope,
        headers: dict[str, str],
        receive: Receive,
        exchange: _Exchange,
    ) -> None:
        path, method = scope["path"], scope["method"]
        # A route may end in "/*": one last path segment of any value (/v1/voices/NAME).
        key = path if path in self._routes else path.rpartition("/")[0] + "/*"
        if key not in self._routes:
            raise HTTPError(404, "not_found", f"no such endpoint: {path}", close=True)
        allowed, handler = self._routes[key]
        if method not in allowed.split():
            raise HTTPError(
                405, "invalid_request", f"{path} accepts {' or '.join(allowed.split())} only", close=True
            )
        if getattr(handler, "authorizes_itself", False):
            pass
        elif path in _SYNTHESIS_PATHS or self.config.protect_service_endpoints:
            self._authorize(headers)
        await handler(headers, receive, exchange)

    def _authorize(self, headers: dict[str, str]) -> None:
        if not self._keys:
            return
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            presented = token.strip()
        else:
            presented = headers.get("x-api-key", "")
        if not presented:
            raise HTTPError(401, "unauthorized", "missing API key", close=True)
        given = presented.encode()
        # Compare against every key, without stopping early, in constant time per key.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise HTTPError(401, "unauthorized", "invalid API key", close=True)

    # -- service endpoints ----------------------------------------------------

    async def _system(
        self, headers: dict[str, str], receive: Receive, ex: _Exchange
    ) -> None:
        info = {
            "api": "v1",
            "server": self.config.server_name,
            "engine": self.engine.name,
            "sample_rate": SAMPLE_RATE,
            "channels": 1,
            "sample_format": "s16le",
            "voices": self.engine.voices(),
            "emotion_tags": emotion_tags(self.engine),
            "queue_depth": self._reported_depth(self.admission.queued),
            "inflight": self.admission.running,
            "capacity": self.config.max_concurrency,
            "max_text_chars": self.config.max_text_chars,
            "default_timeout_s": self.config.default_timeout_s,
            "max_timeout_s": self.config.max_timeout_s,
            "draining": self.admission.draining,
        }
        if self._system_extra is not None:
            info.update(self._system_extra())
        await _send_bytes(ex, 200, json.dumps(info).encode(), b"application/json")

    async def _metrics(
        self, headers: dict[str, str], receive: Receive, ex: _Exchange
    ) -> None:
        await _send_bytes(ex, 200, self.metrics.render(), METRICS_CONTENT_TYPE.encode())

    # -- synthesis ------------------------------------------------------------

    async def synthesize_request(
        self, headers: dict[str, str], receive: Receive, ex: _Exchange
    ) -> None:
        """The v1 synthesis handler, for routes that translate to it (openai_speech.py)."""
        await self._tts(headers, receive, ex)

    async def _tts(
        self, headers: dict[str, str], receive: Receive, ex: _Exchange
    ) -> None:
        if self.admission.draining:
            raise HTTPError(503, "draining", "server is shutting down", close=True)
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise HTTPError(
                415,
                "invalid_request",
                f"Content-Type must be application/json, got {media_type or 'none'!r}",
                close=True,
            )
        body = await self._read_body(headers, receive)
        text, voice, timeout_s, params = self._parse(body)
        ex.extra.update(voice=voice, text_chars=len(text))
        try:
            ticket = self.admission.admit(self.clock())
        except Rejected as rejected:
            raise HTTPError(
                rejected.status,
                rejected.code,
                rejected.message,
                retry_after_s=rejected.retry_after_s,
            ) from None
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        if not ticket.running:
            self._turns[ticket] = trio.Event()
        ex.queue_depth = ticket.depth_at_admission
        self._update_load()
        # The engine may turn enforcement off by returning timeout_s=None (see engine.py).
        deadline_s = params.get("timeout_s", timeout_s)
        deadline = (
            math.inf if deadline_s is None else ex.received_at + float(deadline_s)
        )
        rejection: HTTPError | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope, ex)
                try:
                    await self._run(ticket, deadline, text, voice, params, ex)
                except HTTPError as error:
                    rejection = error  # raised below, not inside an exception group
                nursery.cancel_scope.cancel()
        finally:
            self._release(ticket)
        if rejection is not None:
            raise rejection

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
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
        with trio.move_on_after(self.config.read_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
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
            f"request body not received within {self.config.read_timeout_s:g} s",
            close=True,
        )

    def _parse(self, body: bytes) -> tuple[str, str | None, float, dict[str, Any]]:
        """Text, voice, the capped ``timeout_s`` and the engine's normalised parameters."""
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
            if not _valid_unicode(key) or not _valid_unicode(value):
                raise HTTPError(
                    400,
                    "invalid_param",
                    f"{key!r} holds a lone surrogate (\\uD800-\\uDFFF): not valid Unicode text",
                    param=key if _valid_unicode(key) else None,
                )
        text = obj.pop("text", _MISSING)
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
        if len(text) > self.config.max_text_chars:
            raise HTTPError(
                413,
                "text_too_long",
                f"text has {len(text)} characters; the limit is {self.config.max_text_chars}",
            )
        voice = obj.pop("voice", None)
        if voice is not None and not isinstance(voice, str):
            raise HTTPError(
                400,
                "invalid_param",
                f"voice must be a string or null, got {type(voice).__name__}",
                param="voice",
            )
        timeout_s = obj["timeout_s"] = self._timeout(
            obj.get("timeout_s", self.config.default_timeout_s)
        )
        try:
            params = self.engine.validate(voice, obj)
        except InvalidParam as error:
            raise HTTPError(400, "invalid_param", str(error), param=error.key) from None
        return text, voice, timeout_s, params

    def _timeout(self, value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not value > 0
        ):
            raise HTTPError(
                400,
                "invalid_param",
                f"timeout_s must be a positive number, got {shown_value(value)}",
                param="timeout_s",
            )
        # Capped before float(): a 400-digit integer is past float's range.
        return float(min(value, self.config.max_timeout_s))

    async def _run(
        self,
        ticket: Ticket,
        deadline: float,
        text: str,
        voice: str | None,
        params: dict[str, Any],
        ex: _Exchange,
    ) -> None:
        outcome: EngineError | AbortStream | None = None
        with trio.CancelScope() as shutdown_scope:
            self._streams.add(shutdown_scope)
            try:
                with trio.CancelScope(deadline=deadline) as deadline_scope:
                    turn = self._turns.get(ticket)
                    if turn is not None:
                        await turn.wait()
                    try:
                        await self._stream(text, voice, params, ex)
                    except (EngineError, AbortStream) as error:
                        outcome = error
            finally:
                self._streams.discard(shutdown_scope)
        # The closing frame is written outside both scopes, so it is never cut.
        if shutdown_scope.cancelled_caught:
            await self._end_with_error(ex, "cancelled", "the server is shutting down")
        elif deadline_scope.cancelled_caught:
            await self._end_with_error(
                ex,
                "deadline_exceeded",
                f"deadline of {params.get('timeout_s')} s passed after {ex.chunks} chunks",
            )
        elif isinstance(outcome, EngineError):
            if not ex.started and outcome.status is not None:
                raise HTTPError(
                    outcome.status,
                    outcome.code,
                    outcome.message,
                    param=outcome.param,
                    retry_after_s=outcome.retry_after_s,
                )
            await self._end_with_error(ex, outcome.code, outcome.message)
        elif isinstance(outcome, AbortStream):
            # Returning with the body unfinished makes the server drop the connection.
            if not ex.started:
                await self._start_stream(ex)
            ex.code = "cut"
        else:
            await self._finish(ex)

    async def _stream(
        self, text: str, voice: str | None, params: dict[str, Any], ex: _Exchange
    ) -> None:
        async with aclosing(self.engine.synthesize(text, voice, params)) as pieces:
            async for piece in pieces:
                if isinstance(piece, bytes):
                    if not piece:
                        continue
                    if len(piece) % 2:
                        raise RuntimeError(f"engine produced {len(piece)} bytes (odd)")
                    prefix = b"" if ex.started else await self._start_stream(ex)
                    self._mark_first_audio(ex)
                    await ex.write(prefix + encode_chunk(ex.chunks, piece))
                    ex.chunks += 1
                    ex.samples += len(piece) // 2
                elif isinstance(piece, ChunkLines):
                    if not piece.chunks:
                        continue
                    prefix = b"" if ex.started else await self._start_stream(ex)
                    self._mark_first_audio(ex)
                    await ex.write(prefix + piece.data)
                    ex.chunks += piece.chunks
                    ex.samples += piece.samples
                elif isinstance(piece, Hints):
                    prefix = b"" if ex.started else await self._start_stream(ex)
                    await ex.write(prefix + encode_metrics(**piece.values))
                elif isinstance(piece, RawLine):
                    prefix = b"" if ex.started else await self._start_stream(ex)
                    await ex.write(prefix + piece.data)

    def _mark_first_audio(self, ex: _Exchange) -> None:
        if ex.first_audio_at is None:
            ex.first_audio_at = self.clock()
            self.metrics.time_to_first_audio.observe(ex.first_audio_at - ex.received_at)

    async def _start_stream(self, ex: _Exchange) -> bytes:
        """Send the 200 headers; return the opening metrics frame for the first write."""
        headers = [
            (b"content-type", b"application/x-ndjson"),
            (b"cache-control", b"no-store"),
            (b"x-queue-depth", str(self._reported_depth(ex.queue_depth or 0)).encode()),
        ]
        await ex.start(200, headers)
        return encode_metrics(
            queue_depth=self._reported_depth(self.admission.queued),
            inflight=self.admission.running,
            capacity=self.config.max_concurrency,
        )

    async def _finish(self, ex: _Exchange) -> None:
        prefix = b"" if ex.started else await self._start_stream(ex)
        audio_s = ex.samples / SAMPLE_RATE
        elapsed = self.clock() - ex.received_at
        hints: dict[str, Any] = {"audio_s": round(audio_s, 4)}
        if ex.first_audio_at is not None:
            hints["ttfb_ms"] = round((ex.first_audio_at - ex.received_at) * 1000, 2)
        if audio_s > 0:
            hints["rtf"] = round(elapsed / audio_s, 4)
        await ex.write(
            prefix + encode_metrics(**hints) + encode_eos(ex.chunks, ex.samples),
            more=False,
        )

    async def _end_with_error(self, ex: _Exchange, code: str, message: str) -> None:
        prefix = b"" if ex.started else await self._start_stream(ex)
        ex.code = code
        self.metrics.errors.labels(code=error_label(code)).inc()
        await ex.write(prefix + encode_error(code, message), more=False)

    def _release(self, ticket: Ticket) -> None:
        self._turns.pop(ticket, None)
        for promoted in self.admission.release(ticket, self.clock()):
            self._turns[promoted].set()
        self._update_load()
        if self.admission.depth == 0:
            self._idle.set()

    def _reported_depth(self, own: int) -> int:
        """The queue depth this server reports (header, metrics frame, /v1/system).

        A gateway's running requests run upstream, so it reports the requests
        waiting in its own queue plus the load its best upstream would add.
        """
        if self._upstream_load is None:
            return own
        return self.admission.queued + math.ceil(self._upstream_load())

    def _update_load(self) -> None:
        self.metrics.set_load(self.admission.queued, self.admission.running)

    # -- responses and logging --------------------------------------------------

    async def _send_error(self, ex: _Exchange, error: HTTPError) -> None:
        ex.code = error.code
        if error.status == 499:  # the client is gone: nothing to send
            ex.status = 499
            return
        self.metrics.errors.labels(code=error_label(error.code)).inc()
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

    def _log(self, ex: _Exchange) -> None:
        now = self.clock()
        status = ex.status if ex.status is not None else 499
        sent = None
        if ex.connection is not None:
            sent = ex.connection.bytes_sent - ex.sent_before
            if sent == 0 and ex.connection.closed and status != 499:
                # The caller was gone before a byte of the answer left (a half-close,
                # say): log what it got, not what the app meant to send.
                status, ex.code = 499, ex.code or "client_disconnected"
        if ex.path in _SYNTHESIS_PATHS:
            self.metrics.requests.labels(status=str(status)).inc()
            self.metrics.request_duration.observe(now - ex.received_at)
            self.metrics.audio_seconds.inc(ex.samples / SAMPLE_RATE)
        # Health polls (a gateway asks every worker's /v1/system every few
        # seconds) and scrapes that went well are routine: DEBUG, not INFO.
        routine = ex.path not in _SYNTHESIS_PATHS and status == 200
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
            "engine": self.engine.name,
            "sent_bytes": sent,
            **{key: _clipped(value) for key, value in ex.extra.items()},
        }
        _access_log.log(level, "request %s", json.dumps(record), extra={"request": record})


def create_app(
    engine: Engine,
    config: ServerConfig,
    *,
    clock: Callable[[], float] = trio.current_time,
    upstream_load: Callable[[], float] | None = None,
    system_extra: Callable[[], Mapping[str, Any]] | None = None,
) -> OrpheusApp:
    """The ASGI app for ``engine`` with ``config``'s limits (gateway hooks: see OrpheusApp)."""
    return OrpheusApp(
        engine,
        config,
        clock=clock,
        upstream_load=upstream_load,
        system_extra=system_extra,
    )


def error_label(code: str) -> str:
    """The ``code`` label for ``orpheus_errors_total``: documented codes only."""
    return code if code in ERROR_CODES else "other"


def retry_after_header(seconds: float | None) -> bytes | None:
    """A ``Retry-After`` value: whole seconds, at most :data:`MAX_RETRY_AFTER_S`;
    ``None`` for no number of seconds to wait (NaN, negative)."""
    if seconds is None or not seconds >= 0:
        return None
    return str(math.ceil(min(seconds, MAX_RETRY_AFTER_S))).encode()


def _json_problem(error: ValueError) -> str:
    """What was wrong with a body's JSON, in the request's terms (not Python's)."""
    if "int_max_str_digits" in str(error) or "integer string conversion" in str(error):
        return "a number has more digits than the limit of 4300"
    return str(error)


def _clipped(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_LOGGED_CHARS:
        return f"{value[:_MAX_LOGGED_CHARS]}... ({len(value)} chars)"
    return value


async def _watch_disconnect(
    receive: Receive, scope: trio.CancelScope, ex: _Exchange
) -> None:
    """Cancel the request's work as soon as the client goes away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if ex.finished:  # the server closes the stream after the last frame too
                return
            if not ex.started:
                ex.status = 499
            ex.code = ex.code or "client_disconnected"
            scope.cancel()
            return


async def _send_bytes(
    ex: _Exchange, status: int, body: bytes, content_type: bytes
) -> None:
    await ex.start(
        status,
        [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    )
    await ex.write(body, more=False)


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope["headers"]
    }


def _request_id(given: str | None) -> str:
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _valid_unicode(value: object) -> bool:
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
