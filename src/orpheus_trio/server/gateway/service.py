"""The gateway: the v1 server app with an engine that forwards to workers.

Apps talk to one gateway; it forwards each request through the library's own
:class:`~orpheus_trio.client.OrpheusTTS` (routing by latency and queue hints,
hedging, breakers, failover before the first audio) and re-frames the winning
worker's audio as it arrives. Admission, limits, deadlines, draining, auth,
logging and metrics are the server's own (:func:`~.app.create_app`), so the
gateway behaves like a worker to its callers.

- ``X-Request-Id`` passes through: attempt ``n`` upstream is ``<id>.<n>``.
- The request's remaining time goes upstream as ``timeout_s``.
- Engine parameters pass through unchecked; a worker's 400 comes back as a
  400 that names the parameter, in the gateway's words.
- Before any audio, failures become statuses (:func:`upstream_error`); after
  it, an in-band ``error`` frame, never a silent end.
- No text a worker wrote reaches a caller: errors, ``metrics`` frames and
  ``/v1/system`` are rebuilt from checked fields (:mod:`.vocabulary`).
- A caller that leaves cancels the upstream attempt at once (the server
  cancels the engine, which closes the upstream connection).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import httpx
import trio

from ...apikey import Secret, check_api_key
from ...client import AudioStream, EndpointSnapshot, OrpheusTTS
from ...errors import (
    CircuitOpenError,
    DeadlineExceeded,
    HTTPStatusError,
    OrpheusError,
    ServiceError,
)
from ..._policy.failure import BUSY_STATUS
from ...options import Hedging, Pool, Timeouts
from ...protocol.frames import ChunkLine, ErrorFrame, FrameDecoder, Metrics
from ...transports.base import HttpxTransport, Transport
from ...transports.trio import TrioTransport, warn_verification_off
from ..app import ERROR_CODES, MAX_RETRY_AFTER_S, OrpheusApp, create_app
from ..config import ServerConfig
from ..engine import (
    CURRENT_REQUEST,
    ChunkLines,
    EngineError,
    Hints,
    InvalidParam,
    Piece,
    RequestContext,
)
from ...voices import VoiceCatalog, is_voice_name
from .metrics import UpstreamMetrics
from .relay import CapturedResponse, RelayTransport, capturing, winner_of
from .upstreams import UpstreamStatus, UpstreamWatch
from .vocabulary import outcome_metrics
from ..http.run import serve_app

__all__ = ["Gateway", "GatewayEngine", "upstream_error"]

GATEWAY_NAME = "orpheus-trio-gateway"
_log = logging.getLogger("orpheus_trio.gateway")
#: Keys of ``open_stream`` that are not engine parameters.
_RESERVED_PARAMS = frozenset({"request_id", "endpoints"})
#: The longest ``X-Request-Id`` a server keeps (``app.py``); a longer one is replaced.
MAX_REQUEST_ID_CHARS = 128
#: A worker's answers about the caller's request itself (passed on as they are).
_CALLERS_FAULT_STATUS = frozenset({400, 413})
#: A worker's other answers but 200 blame that worker (its key, its URL, a proxy
#: in front of it): fail over, and count against it. 429/503 just say "busy".
_WORKERS_FAULT_STATUS = (
    frozenset(range(100, 600)) - {200} - BUSY_STATUS - _CALLERS_FAULT_STATUS
)
#: Errors that mean no worker was reached at all (our own pool full included).
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Longest upstream error text the gateway's log keeps.
_MAX_LOGGED_CHARS = 500
#: What a ``param`` passed on may look like (a parameter's name).
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: Codes a worker's 400 or 413 may carry to the caller.
_CALLERS_FAULT_CODES = frozenset(
    {"invalid_request", "invalid_param", "text_too_long", "body_too_large"}
)
#: The contract's in-band error codes.
_IN_BAND_CODES = frozenset({"deadline_exceeded", "engine_error", "cancelled", "internal"})


class GatewayEngine:
    """An :class:`~.engine.Engine` whose audio comes from the upstream workers."""

    name = "gateway"
    #: Names the workers' catalogs lack (a voice added since the last poll) and no
    #: voice at all go on to the workers, which answer for themselves (voices_api).
    passes_unknown_voices = True

    def __init__(
        self,
        client: OrpheusTTS,
        upstreams: UpstreamWatch,
        *,
        upstream_api_key: str | None = None,
    ) -> None:
        self.client = client
        self.upstreams = upstreams
        # Only for the gateway's own log: callers never get a worker's text.
        self._secret = Secret(upstream_api_key) if upstream_api_key else None
        self.metrics = UpstreamMetrics(client.endpoints, upstreams.healthy)

    def voices(self) -> list[str]:
        return self.upstreams.voices(self.client.endpoints())

    def catalog(self) -> VoiceCatalog | None:
        return self.upstreams.catalog(self.client.endpoints())

    def validate(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        # The workers validate their own engines' parameters; only our own keys are checked.
        for key in _RESERVED_PARAMS.intersection(params):
            hint = " (send X-Request-Id)" if key == "request_id" else ""
            raise InvalidParam(key, f"not an engine parameter{hint}")
        return dict(params)

    async def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        forwarded = {k: v for k, v in params.items() if k != "timeout_s"}
        # The server runs this under the request's deadline: pass on what is left.
        deadline = trio.current_effective_deadline()
        remaining = deadline - trio.current_time() if deadline != math.inf else None
        request = CURRENT_REQUEST.get()
        streaming = False
        try:
            async with AsyncExitStack() as stack:
                with capturing() as captured:  # no yield inside: see capturing()
                    audio = await stack.enter_async_context(
                        self.client.open_stream(
                            text,
                            voice,
                            timeout_s=max(remaining, 0.001) if remaining is not None else None,
                            request_id=self._parent_id(request),
                            endpoints=self.upstreams.offering(voice),
                            **forwarded,
                        )
                    )
                streaming = True
                spoken = audio.metrics.get("voice")  # the worker's word, checked
                if request is not None and is_voice_name(spoken):
                    request.log_fields["voice"] = spoken
                if request is not None:
                    request.log_fields.update(
                        upstream=audio.endpoint,
                        upstream_request_id=self.for_log(audio.request_id),  # its echo
                        attempts=audio.attempts,
                    )
                self.metrics.time_to_first_audio.labels(
                    upstream=audio.endpoint
                ).observe(audio.ttfb_s)
                winner = winner_of(captured, audio.request_id)
                metrics: dict[str, Any]
                if winner is None:  # cannot tell which response won: forward its PCM
                    async for pcm in audio:
                        yield pcm
                    metrics = audio.metrics
                else:
                    metrics = {}
                    async for lines in self._relay(winner, audio, metrics):
                        yield lines
            # Rebuilt from a whitelist: e.g. finish_reason and truncated, so the
            # caller learns of a cut; the worker's load and timings are not ours.
            outcome = outcome_metrics(metrics)
            if outcome:
                yield Hints(outcome)
        except (OrpheusError, httpx.HTTPError) as error:
            self._log_failure(request, error)
            raise self._naming_aliases(
                upstream_error(
                    error,
                    streaming=streaming,
                    sent=self._as_echoed({*params, "text", "voice"}),
                    voices=self.voices(),
                )
            ) from error

    def _naming_aliases(self, error: EngineError) -> EngineError:
        """A refused voice's answer lists the aliases too (the workers' checked names)."""
        catalog = self.catalog()
        if error.param != "voice" or catalog is None or not catalog.aliases:
            return error
        aliases = ", ".join(f"{a} ({v})" for a, v in catalog.aliases.items())
        return EngineError(
            error.code, f"{error.message}; aliases: {aliases}", status=error.status,
            retry_after_s=error.retry_after_s, param=error.param,
        )  # fmt: skip

    def _as_echoed(self, names: set[str]) -> dict[str, str]:
        """The caller's field names by the form the client reads them in when a
        worker echoes them (its error text passes the key's redactor, the same
        as ours): so which name a worker's ``param`` means never depends on
        whether the name holds a piece of the key. Names that read alike mean none."""
        forms: dict[str, list[str]] = {}
        for name in names:
            forms.setdefault(self.for_log(name), []).append(name)
        return {form: same[0] for form, same in forms.items() if len(same) == 1}

    def _log_failure(self, request: RequestContext | None, error: Exception) -> None:
        """The upstream's own words, for the operator: the caller gets none of them."""
        detail = f"{type(error).__name__}: {error}"
        if isinstance(error, HTTPStatusError):
            detail = f"{detail} ({error.code}: {error.message})"
        detail = detail[:_MAX_LOGGED_CHARS]
        _log.info(
            "request %s: upstream failure: %s",
            request.request_id if request is not None else "-",
            self.for_log(detail),
        )

    def for_log(self, text: str) -> str:
        """``text`` with the upstream key blanked out, for the gateway's own log."""
        return text if self._secret is None else self._secret.redact(text)

    async def _relay(
        self, winner: CapturedResponse, audio: AudioStream, metrics: dict[str, Any]
    ) -> AsyncGenerator[ChunkLines, None]:
        """The winner's checked chunk lines, one piece per upstream read.

        A failure is handed back to the client's stream, whose own reading
        raises it (so its breaker and router count it as for any stream).
        """
        decoder = FrameDecoder(max_line_bytes=self.client.pool.max_line_bytes, relay=True)
        data = winner.take_over()
        try:
            while True:
                lines: list[bytes] = []
                samples = 0
                ended_with: ErrorFrame | None = None
                for frame in decoder.feed(data):
                    if isinstance(frame, ChunkLine):
                        lines.append(frame.line)
                        samples += frame.samples
                    elif isinstance(frame, Metrics):
                        metrics.update(frame.values)
                    elif isinstance(frame, ErrorFrame):
                        ended_with = frame  # the audio before it still goes out
                if lines:
                    yield ChunkLines(b"".join(lines), len(lines), samples)
                if ended_with is not None:
                    raise _in_band_error(ended_with, audio.endpoint)
                if decoder.finished:
                    break
                decoder.feed(b"")  # a bad line after good frames in the last read
                data = await winner.receive_relayed()
                if not data:
                    decoder.close()  # raises: the body ended without eos or error
        except (OrpheusError, httpx.HTTPError) as error:
            winner.fail(error)
            async for _ in audio:  # the client's stream raises it (or an equivalent)
                pass
            raise
        await self._read_body_end(winner)

    async def _read_body_end(self, winner: CapturedResponse) -> None:
        """After ``eos``, read the HTTP body's end, so the connection can be reused."""
        with trio.move_on_after(self.client.timeouts.close_s):
            try:
                while data := await winner.receive_relayed():
                    if data.strip():
                        return  # junk after eos: the client closes the connection
            except (httpx.HTTPError, OSError, trio.BrokenResourceError):
                return  # the audio is complete; the connection is dropped

    def _parent_id(self, request: RequestContext | None) -> str | None:
        """The caller's id, cut so that ``<id>.<n>`` still fits a worker's limit
        (a longer one is dropped there, and the worker's log no longer leads back)."""
        if request is None:
            return None
        room = MAX_REQUEST_ID_CHARS - len(f".{self.client.hedging.max_attempts}")
        return request.request_id[:room]

    def upstream_load(self) -> float:
        """The queue depth the best healthy upstream would give a request now."""
        snapshots = self.client.endpoints()
        candidates = [s for s in snapshots if self.upstreams.healthy(s)] or snapshots
        # A worker's hint (queued plus running) already counts the attempts we had
        # open when it was reported; our own in-flight count is a floor on it.
        return min(max(s.queue_hint, s.in_flight) for s in candidates)

    def reachable_capacity(self) -> int:
        """The capacity the reachable, not draining upstreams reported at their last poll."""
        statuses = self.upstreams.statuses.values()
        return sum(s.capacity or 0 for s in statuses if s.reachable and not s.draining)

    def summary(self) -> dict[str, Any]:
        """Fields the gateway adds to ``/v1/system``."""
        snapshots = self.client.endpoints()
        healthy = [s for s in snapshots if self.upstreams.healthy(s)]
        return {
            "gateway": True,
            "upstreams": [self._describe(s) for s in snapshots],
            "healthy_upstreams": len(healthy),
            "upstream_capacity": sum(
                self.upstreams.statuses[s.url].capacity or 0 for s in healthy
            ),
        }

    def _describe(self, snapshot: EndpointSnapshot) -> dict[str, Any]:
        status = self.upstreams.statuses[snapshot.url]
        return {
            "url": snapshot.url,
            "healthy": self.upstreams.healthy(snapshot),
            "reachable": status.reachable,
            "draining": status.draining,
            "engine": status.engine,
            "voices": list(status.voices),
            "languages": sorted(set(status.languages.values())),
            "queue_depth": status.queue_depth,
            "inflight": status.inflight,
            "capacity": status.capacity,
            "error": status.error,  # a category (vocabulary.POLL_ERRORS), never its text
            "score": _finite_or_none(snapshot.score),
            "latency_estimate_s": snapshot.latency_estimate_s,
            "queue_hint": snapshot.queue_hint,
            "open_attempts": snapshot.in_flight,  # the gateway's; "inflight" is the worker's
            "breaker_state": snapshot.breaker_state,
            "breaker_retry_in_s": snapshot.breaker_retry_in_s,
            "attempts": snapshot.attempts,
            "wins": snapshot.wins,
            "failures": snapshot.failures,
            "hedges": snapshot.hedges,
            "failovers": snapshot.failovers,
        }

    async def aclose(self) -> None:
        await self.client.close()
        await self.upstreams.aclose()


def upstream_error(
    error: Exception,
    *,
    streaming: bool,
    sent: Mapping[str, str] | None = None,
    voices: Sequence[str] = (),
) -> EngineError:
    """What the caller gets for an upstream failure, built from the gateway's own words.

    Before audio (``streaming`` false) the status says whose fault it is: a
    worker's 400 or 413 stays one (the caller's request, same answer anywhere),
    429 when every worker was busy, 503 when none could be reached, 504 when
    one was reached but did not answer in time, 502 for broken workers and for
    other 4xx (a refused upstream key, a wrong upstream URL: the gateway's
    set-up, not the caller's request). Errors a worker sent in-band stay
    in-band, and so does anything after audio.

    No text a worker wrote is passed on (docs/reliability.md, "Trust
    boundaries"): the code comes from a fixed set (others become
    ``upstream_error``, ``invalid_request`` or ``engine_error``), the message is
    the gateway's own, and a 400's ``param`` is given only when it names a field
    the caller sent (``sent``: each such name by the form a worker's echo of it
    is read in), as the caller spelled it. ``voices``: the gateway's own
    checked list, named when a worker refused the caller's voice.
    """
    if isinstance(error, DeadlineExceeded):
        return EngineError("deadline_exceeded", "the request's deadline passed upstream")
    if isinstance(error, ServiceError):
        code = _documented(error.code, _IN_BAND_CODES, "engine_error")
        return EngineError(code, f"the upstream worker ended the stream with {code}")
    if streaming:
        return EngineError("engine_error", "the upstream stream broke after audio")
    if isinstance(error, HTTPStatusError):
        code = _documented(error.code, ERROR_CODES, "other")
        if error.status_code in BUSY_STATUS:
            return EngineError(
                "overloaded" if error.status_code == 429 else "unavailable",
                f"every upstream is busy or unavailable; last: {error.status_code} {code}",
                status=error.status_code,
                retry_after_s=_sane_retry_after(error.retry_after_s),
            )
        if error.status_code in _CALLERS_FAULT_STATUS:
            return _callers_fault(error, sent or {}, voices)
        return EngineError(
            "upstream_error",
            f"upstream answered {error.status_code} {code}",
            status=502,
        )
    if isinstance(error, CircuitOpenError):
        return EngineError(
            "unavailable",
            "every upstream's circuit breaker is open",
            status=503,
            retry_after_s=_sane_retry_after(error.retry_in_s),
        )
    if isinstance(error, _UNREACHABLE):
        return EngineError("unavailable", "no upstream could be reached", status=503)
    if isinstance(error, httpx.TimeoutException):  # reached, then no answer in time
        return EngineError("upstream_error", "upstream did not answer in time", status=504)
    return EngineError("upstream_error", "upstream failed", status=502)


def _callers_fault(
    error: HTTPStatusError, sent: Mapping[str, str], voices: Sequence[str]
) -> EngineError:
    """A worker's 400 or 413, in the gateway's words: its documented code, and the
    parameter it names when the caller sent one by that name."""
    code = _documented(error.code, _CALLERS_FAULT_CODES, "invalid_request")
    refused = _refused_param(error.response)
    param = sent.get(refused) if refused is not None else None
    if param is not None and not _PARAM_NAME.fullmatch(param):
        param = None
    if param == "voice":
        offered = f"; voices: {', '.join(voices)}" if voices else ""
        message = f"voice: no upstream worker offers this voice{offered}"
    elif param is not None:
        message = (
            f"{param}: refused by the upstream worker "
            "(a bad value, or not a parameter of its engine)"
        )
    elif code == "text_too_long":
        message = "text: too long for the upstream workers"
    else:
        message = f"the upstream worker refused the request ({code})"
    return EngineError(code, message, status=error.status_code, param=param)


def _documented(code: str, allowed: frozenset[str], other: str) -> str:
    return code if code in allowed else other


def _in_band_error(frame: ErrorFrame, endpoint: str) -> ServiceError:
    """What the client raises for the same in-band error frame."""
    if frame.code == "deadline_exceeded":
        return DeadlineExceeded(frame.message, endpoint=endpoint)
    return ServiceError(frame.code, frame.message, endpoint=endpoint)


def _sane_retry_after(seconds: float | None) -> float | None:
    """A worker's ``Retry-After``, capped, or ``None`` when it is no number of seconds to wait."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def _refused_param(response: httpx.Response) -> str | None:
    """The ``param`` of a worker's JSON error body, if it named one."""
    try:
        param = response.json()["error"]["param"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return param if isinstance(param, str) else None


def _with_relay_transport(options: dict[str, Any]) -> dict[str, Any]:
    """The client's options with its transport wrapped in a :class:`RelayTransport`.

    The gateway makes the transport the client would have made from the same
    options (and closes it), or wraps the one it was given (and leaves it open).
    """
    options = dict(options)
    given = options.pop("transport", None)
    if given is not None and not isinstance(given, str):
        options["transport"] = RelayTransport(given, owns_inner=False)
        return options
    if given not in (None, "trio", "httpx"):
        options["transport"] = given  # the client says what is wrong with it
        return options
    # The client keeps its timeouts and pool groups (other fields are its own).
    timeouts, pool = options.get("timeouts") or Timeouts(), options.get("pool") or Pool()
    settings: dict[str, Any] = {
        "connect_timeout_s": timeouts.connect_s,
        "read_timeout_s": timeouts.read_s,
        "max_connections_per_endpoint": pool.max_connections_per_endpoint,
    }
    ssl_context = options.pop("ssl_context", None)
    verify = bool(options.pop("verify", True))
    if ssl_context is not None and not verify:
        raise ValueError("give ssl_context or verify=False, not both")
    inner: Transport
    if given == "httpx":
        if not verify:
            warn_verification_off()
        inner = HttpxTransport(
            **settings, verify=ssl_context if ssl_context is not None else verify
        )
    else:
        inner = TrioTransport(**settings, ssl_context=ssl_context, verify=verify)
    options["transport"] = RelayTransport(inner, owns_inner=True)
    return options


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class Gateway:
    """A gateway's parts: the upstream client and watch, the engine and the server app.

    ``await nursery.start(gateway.serve)`` polls the workers once, then serves
    (see :func:`~.run.serve_app`); :meth:`aclose` afterwards.
    """

    def __init__(
        self,
        upstreams: Sequence[str],
        config: ServerConfig,
        *,
        upstream_api_key: str | None = None,
        hedge_ttfb_ms: float | None = Hedging.ttfb_ms,
        health_interval_s: float = 2.0,
        health_timeout_s: float = 2.0,
        size_to_upstreams: bool = False,
        **client_options: Any,
    ) -> None:
        if config.server_name == ServerConfig.server_name:
            config = replace(config, server_name=GATEWAY_NAME)
        self.config = config
        if upstream_api_key is not None:  # named as the gateway's user knows it
            check_api_key(upstream_api_key, "upstream_api_key")
        ssl_context = client_options.get("ssl_context")
        verify = ssl_context or bool(client_options.get("verify", True))
        client = OrpheusTTS(
            upstreams,
            api_key=upstream_api_key,
            hedge_ttfb_ms=hedge_ttfb_ms,
            endpoint_fault_status=_WORKERS_FAULT_STATUS,
            truncation_warning=False,  # passed on to the caller in-band instead
            **_with_relay_transport(client_options),
        )
        watch = UpstreamWatch(
            client.base_urls,
            api_key=upstream_api_key,
            interval_s=health_interval_s,
            timeout_s=health_timeout_s,
            verify=verify,  # the poll trusts what the requests trust
        )
        self.engine = GatewayEngine(client, watch, upstream_api_key=upstream_api_key)
        self._size_to_upstreams = size_to_upstreams
        self.app = self._create_app()

    def _create_app(self) -> OrpheusApp:
        app = create_app(
            self.engine,
            self.config,
            upstream_load=self.engine.upstream_load,
            system_extra=self.engine.summary,
        )
        app.metrics.registry.register(self.engine.metrics)
        return app

    async def watch_upstreams(self, nursery: trio.Nursery) -> None:
        """Poll the workers once, then keep polling in ``nursery``.

        With ``size_to_upstreams``, the first poll also sets ``max_concurrency``
        to the reachable workers' capacity together (kept as configured when
        none answered): the gateway then admits as many streams as its workers
        run, and lets their own queues and 429s do the rest. Call it before
        serving :attr:`app`: the app is made again for the new limit.
        """
        await nursery.start(self.engine.upstreams.watch)
        capacity = self.engine.reachable_capacity()
        if self._size_to_upstreams and capacity > 0:
            self.config = replace(self.config, max_concurrency=capacity)
            self.app = self._create_app()

    def first_poll_report(self) -> list[str]:
        """What the gateway sees of each worker (one line each), and a warning
        when none is reachable: what ``orpheus-trio gateway`` prints at start."""
        statuses = self.engine.upstreams.statuses.values()
        lines = [_poll_line(status, self.engine.for_log) for status in statuses]
        if not any(s.reachable for s in statuses):
            lines.append(
                "warning: no upstream is reachable; requests are answered 503 "
                "unavailable until one answers its /v1/system "
                f"(polled every {self.engine.upstreams.interval_s:g} s)"
            )
        return lines

    async def serve(
        self,
        *,
        drain: trio.Event | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch the workers and serve until cancelled or drained; report the base URL."""
        async with trio.open_nursery() as nursery:
            await self.watch_upstreams(nursery)
            await serve_app(self.app, self.config, drain=drain, task_status=task_status)
            nursery.cancel_scope.cancel()

    async def aclose(self) -> None:
        await self.engine.aclose()


def _poll_line(status: UpstreamStatus, redact: Callable[[str], str]) -> str:
    """One worker's first poll, for the operator's terminal (the error's own
    text included, through ``redact``: it names the cause, e.g. ``Connection
    refused``). Only that text is redacted: the line's own words are ours, and
    a key that holds one of them (``UpstreamKey...``) must not blank them."""
    if not status.reachable:
        detail = redact(f"{status.detail}")
        return f"upstream {status.url}: NOT reachable ({status.error}: {detail})"
    voices = ", ".join(status.voices) if status.voices else "none"
    draining = ", draining" if status.draining else ""
    return (
        f"upstream {status.url}: reachable{draining}, engine {status.engine}, "
        f"capacity {status.capacity}, voices ({len(status.voices)}): {voices}"
    )
