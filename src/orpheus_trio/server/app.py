"""The ASGI app speaking the v1 contract for any :class:`~.engine.Engine`.

It only wires the pieces, each in its own module: the route table
(:mod:`.routes`, every route mounted here), auth (:mod:`.auth`), request
checks (:mod:`.requests`), admission (:mod:`.slots`), the synthesis handler
(:mod:`.synthesis`, :mod:`.v1_stream`), the service endpoints
(:mod:`.service_endpoints`), OpenAI's speech route (:mod:`.openai_speech`),
the playground (:mod:`.playground`), error answers (:mod:`.error_codes`) and
the access log (:mod:`.access_log`). It never knows which engine it runs, so
a gateway reuses it with an engine that forwards upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio

from ..audio.pcm import SAMPLE_RATE
from ..protocol.frames import encode_error
from . import openai_speech, voice_upload
from .access_log import ACCESS_LOGGER, log_exchange, settle
from .admission import Admission
from .auth import KeyCheck
from .config import ServerConfig
from .engine import CURRENT_REQUEST, Engine, RequestContext
from .error_codes import (
    ERROR_CODES,
    MAX_RETRY_AFTER_S,
    error_label,
    retry_after_header,
    send_error,
)
from .exchange import Exchange, HTTPError, Receive, Scope, Send, request_headers, request_id
from .http.state import CURRENT_CONNECTION
from .metrics import ServerMetrics
from .playground import PLAYGROUND_PATH, Playground
from .routes import Routes
from .service_endpoints import MetricsEndpoint, SystemEndpoint, VoicesEndpoint
from .slots import Slots
from .synthesis import SynthesisHandler
from .v1_stream import StreamWriter

# ERROR_CODES, MAX_RETRY_AFTER_S, HTTPError, retry_after_header and ACCESS_LOGGER
# live in their own modules; the gateway and tests import them from here too.
__all__ = [
    "ACCESS_LOGGER",
    "ERROR_CODES",
    "MAX_RETRY_AFTER_S",
    "HTTPError",
    "OrpheusApp",
    "create_app",
    "retry_after_header",
]

_error_log = logging.getLogger("orpheus_trio.server")


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
        self.metrics = ServerMetrics()
        self.metrics.capacity.set(config.max_concurrency)
        self.slots = Slots(config, self.metrics, clock, upstream_load)
        self._keys = KeyCheck(config.api_keys)
        self.routes = _mount_routes(engine, config, self.slots, self.metrics, clock, system_extra)

    @property
    def admission(self) -> Admission:
        return self.slots.admission

    @property
    def draining(self) -> bool:
        return self.slots.admission.draining

    def start_draining(self) -> None:
        """Stop admitting: new synthesis requests get 503 ``draining``."""
        self.slots.admission.draining = True

    async def wait_idle(self) -> None:
        """Return once no request is queued or running."""
        await self.slots.wait_idle()

    def cancel_streams(self) -> None:
        """End every admitted request now, each with an in-band ``cancelled`` frame."""
        self.slots.cancel_streams()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = request_headers(scope)
        connection = CURRENT_CONNECTION.get()
        ex = Exchange(
            send=send,
            request_id=request_id(headers.get("x-request-id")),
            method=scope["method"],
            path=scope["path"],
            received_at=self.clock(),
            connection=connection,
            sent_before=0 if connection is None else connection.bytes_sent,
        )
        token = CURRENT_REQUEST.set(RequestContext(ex.request_id, ex.extra))
        try:
            await self._handle(headers, receive, ex)
        finally:
            CURRENT_REQUEST.reset(token)
            self._log(ex)

    async def _handle(self, headers: dict[str, str], receive: Receive, ex: Exchange) -> None:
        """Route, authorize and run the request; every failure becomes an answer."""
        route = self.routes.get(ex.path)
        if route is not None:
            ex.synthesis = route.synthesis
            if route.prepare is not None:
                route.prepare(ex)
        try:
            handler = self.routes.handler(route, ex.path, ex.method)
            # A handler that checks its own keys (adding voices takes the voices admin key).
            own_keys = getattr(handler, "authorizes_itself", False)
            if (ex.synthesis or self.config.protect_service_endpoints) and not own_keys:
                self._keys.authorize(headers)
            await handler(headers, receive, ex)
        except HTTPError as error:
            await self._send_error(ex, error)
        except Exception:  # noqa: BLE001 - a bug in one request must not take the server down
            _error_log.exception("request %s failed", ex.request_id)
            if not ex.started:
                await self._send_error(ex, HTTPError(500, "internal", "internal error"))
            else:
                self.metrics.errors.labels(code="internal").inc()
                ex.code = "internal"
                await ex.write(encode_error("internal", "internal error"), more=False)

    async def _send_error(self, ex: Exchange, error: HTTPError) -> None:
        if error.status == 499:  # the client is gone: nothing to send
            ex.status, ex.code = 499, error.code
            return
        self.metrics.errors.labels(code=error_label(error.code)).inc()
        await send_error(ex, error)

    def _log(self, ex: Exchange) -> None:
        now = self.clock()
        status, sent = settle(ex)
        if ex.synthesis:
            self.metrics.record_request(status, now - ex.received_at, ex.samples / SAMPLE_RATE)
        log_exchange(ex, status=status, sent=sent, now=now, engine=self.engine.name)


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


def _mount_routes(
    engine: Engine,
    config: ServerConfig,
    slots: Slots,
    metrics: ServerMetrics,
    clock: Callable[[], float],
    system_extra: Callable[[], Mapping[str, Any]] | None,
) -> Routes:
    """Every route the server answers, in one table."""
    routes = Routes()
    writer = StreamWriter(slots, metrics, config.max_concurrency, clock)
    synthesize = SynthesisHandler(engine, config, slots, writer)
    routes.mount("/v1/tts/stream", "POST", synthesize, synthesis=True)
    openai_speech.mount(routes, synthesize, config.max_body_bytes)
    routes.mount("/v1/system", "GET", SystemEndpoint(engine, config, slots, system_extra))
    routes.mount("/v1/voices", "GET", VoicesEndpoint(engine))
    routes.mount("/metrics", "GET", MetricsEndpoint(metrics))
    voice_upload.mount(routes, engine)  # POST /v1/voices, DELETE /v1/voices/NAME (issue 32)
    if config.playground:
        routes.mount(PLAYGROUND_PATH, "GET", Playground())
    return routes


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
