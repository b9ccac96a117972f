"""``OrpheusTTS``: the client users build on.

The I/O shell around the sans-IO policies: :mod:`routing` picks endpoints,
:mod:`hedge` races attempts, :mod:`budget` bounds extra attempts,
:mod:`breaker` guards each endpoint, :mod:`failure` judges every failed
attempt, :mod:`transport` does HTTP and :mod:`stream` reads the body.
Written on AnyIO, so it runs natively under Trio and asyncio. Timings come
from ``anyio.current_time()`` (Trio's clock under Trio), so
``trio.testing.MockClock`` drives every policy in tests. Settings are
:mod:`options` values.
"""

from __future__ import annotations

import json
import math
import os
import random
import ssl
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import anyio

from .apikey import Secret, check_api_key
from ._policy.breaker import CircuitBreaker
from ._policy.budget import RetryBudget
from ._policy.endpoints import STREAM_PATH, Endpoint, EndpointSnapshot, normalize_urls
from .errors import CircuitOpenError, DeadlineExceeded, IncompleteStreamError
from ._policy.failure import Blame, FailurePolicy
from .protocol.frames import Metrics
from .hedge import Reason, race
from .options import Breaker, Hedging, Pool, Timeouts, positive_seconds
from ._policy.routing import Router
from .speech import SpeechSource
from .stream import AudioStream, Call, FrameReader, close_quietly, read_status_error
from .transports.base import HttpxTransport, StreamRequest, Transport
from .transports.asyncio import AsyncioTransport
from .transports.loop import LoopTransport
from ._http.pool import warn_verification_off
from .transports.trio import TrioTransport

if TYPE_CHECKING:
    from .local.synthesizer import LocalSynthesizer

__all__ = ["AudioStream", "EndpointSnapshot", "OrpheusTTS", "STREAM_PATH"]

_O = TypeVar("_O", Timeouts, Hedging, Breaker, Pool)


def _one_of(group: _O | None, flat: _O, name: str) -> _O:
    """The settings group given, or the one the separate keywords built (not both)."""
    if group is None:
        return flat
    if flat != type(flat)():
        raise ValueError(f"give {name}=... or its separate keyword arguments, not both")
    return group


def _number(value: object) -> float | None:
    """A JSON number as a float; anything else (bool, string, null) as None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class _Plan:
    """The race policy for one request: next endpoint, budget, retryable errors."""

    def __init__(self, client: OrpheusTTS, call: Call, first_endpoint: str) -> None:
        self._client = client
        self._call = call
        self.tried = [first_endpoint]

    def next_attempt(self, reason: Reason) -> Callable[[], Awaitable[AudioStream]] | None:
        client = self._client
        if len(self.tried) >= client.max_attempts:
            return None
        now = anyio.current_time()
        if now >= self._call.deadline:
            return None
        allowed = client._allowed(now, self._call)
        endpoint = client._router.choose(now, allowed=allowed, exclude=self.tried, spread=False)
        if endpoint is None:
            # Every allowed endpoint was tried: go again (a gateway routes it elsewhere).
            endpoint = client._router.choose(now, allowed=allowed, spread=False)
        if endpoint is None or not client._budget.try_spend(now):
            return None
        self.tried.append(endpoint)
        client._reserve(endpoint, now)
        record = client._endpoints[endpoint]
        if reason == "hedge":
            record.hedges += 1
        else:
            record.failovers += 1
        return lambda: client._attempt(self._call, endpoint)

    def is_retryable(self, error: Exception) -> bool:
        return self._client._policy.retryable(error)

    async def discard(self, result: AudioStream) -> None:
        await result.aclose()


class OrpheusTTS(SpeechSource):
    """Streams Orpheus speech from one gateway or several workers, hedged and failed over.

    ``base_urls``: one URL or several (each ``http(s)://host[:port]``).
    ``hedge_ttfb_ms``: start a backup attempt when no audio arrived this long
    after the last attempt started; ``None`` or ``0`` turns hedging off
    (failover stays on). ``timeout_s``: default per-request deadline.
    ``min_rate_bytes`` per ``min_rate_window_s`` (1 KiB per 10 s): once a body has
    started, the least it must bring per that much time spent waiting in reads,
    else :class:`~orpheus_trio.errors.SlowBodyError` (``None``: no minimum); a
    read timeout alone restarts with every byte, so a trickle would never end.
    ``transport``: the HTTP engine: ``None`` (the default,
    :class:`~orpheus_trio.transports.loop.LoopTransport`: HTTP/1.1 on the
    sockets of the loop that runs the request, Trio's or asyncio's),
    ``"trio"`` or ``"asyncio"`` (that loop's only), ``"httpx"``
    (:class:`~orpheus_trio.transports.base.HttpxTransport`, both loops) or a
    :class:`~orpheus_trio.transports.base.Transport` you made (and close).
    ``endpoint_fault_status``: statuses (besides 429 and 5xx) that blame the
    endpoint, not the request: fail over, and count against its breaker (a
    gateway gives 401, as one worker refusing its key says nothing of the others).
    ``truncation_warning``: issue :class:`~orpheus_trio.errors.TruncatedSpeechWarning`
    when the service says a reply was cut short (``False``: read
    :attr:`AudioStream.truncated` instead; a gateway passes the fact on in-band).
    ``ssl_context``: TLS settings for ``https`` endpoints of a transport the client makes
    (default: ``ssl.create_default_context()``, certificates verified).
    ``verify=False`` turns certificate checks off (with an ``InsecureTransportWarning``).
    ``rng``: randomness for load spreading and breaker jitter (seed it in tests).

    Settings may also be given grouped, as :mod:`~orpheus_trio.options` values:
    ``timeouts`` (``timeout_s``, ``connect_timeout_s``, ``read_timeout_s``,
    ``close_timeout_s``, ``min_rate_bytes``, ``min_rate_window_s``), ``hedging``
    (``hedge_ttfb_ms``, ``max_attempts``, ``hedge_budget_*``), ``breaker`` (``breaker_*``) and ``pool``
    (``max_connections_per_endpoint``, ``max_line_bytes``); a group and its
    separate keywords are not given together.
    """

    def __init__(
        self,
        base_urls: str | Sequence[str],
        api_key: str | None = None,
        hedge_ttfb_ms: float | None = Hedging.ttfb_ms,
        *,
        timeout_s: float | None = Timeouts.request_s,
        connect_timeout_s: float = Timeouts.connect_s,
        read_timeout_s: float | None = Timeouts.read_s,
        min_rate_bytes: int | None = Timeouts.min_rate_bytes,
        min_rate_window_s: float = Timeouts.min_rate_window_s,
        max_connections_per_endpoint: int = Pool.max_connections_per_endpoint,
        max_attempts: int = Hedging.max_attempts,
        hedge_budget_ratio: float = Hedging.budget_ratio,
        hedge_budget_min: int = Hedging.budget_min,
        hedge_budget_window_s: float = Hedging.budget_window_s,
        breaker_failures: int = Breaker.failures,
        breaker_base_cooldown_s: float = Breaker.base_cooldown_s,
        breaker_max_cooldown_s: float = Breaker.max_cooldown_s,
        close_timeout_s: float = Timeouts.close_s,
        max_line_bytes: int = Pool.max_line_bytes,
        transport: Transport | Literal["trio", "asyncio", "httpx"] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
        rng: random.Random | None = None,
        endpoint_fault_status: Collection[int] = (),
        truncation_warning: bool = True,
        timeouts: Timeouts | None = None,
        hedging: Hedging | None = None,
        breaker: Breaker | None = None,
        pool: Pool | None = None,
    ) -> None:
        self.base_urls = normalize_urls(base_urls)
        self._api_key = Secret(check_api_key(api_key)) if api_key is not None else None
        flat = Hedging(
            hedge_ttfb_ms, max_attempts, hedge_budget_ratio, hedge_budget_min, hedge_budget_window_s
        )
        self.hedging = _one_of(hedging, flat, "hedging")
        flat_timeouts = Timeouts(
            timeout_s,
            connect_timeout_s,
            read_timeout_s,
            close_timeout_s,
            min_rate_bytes,
            min_rate_window_s,
        )
        self.timeouts = _one_of(timeouts, flat_timeouts, "timeouts")
        flat_breaker = Breaker(breaker_failures, breaker_base_cooldown_s, breaker_max_cooldown_s)
        self.breaker = _one_of(breaker, flat_breaker, "breaker")
        self.pool = _one_of(pool, Pool(max_connections_per_endpoint, max_line_bytes), "pool")
        self._policy = FailurePolicy(frozenset(endpoint_fault_status))
        self.truncation_warning = truncation_warning
        rng = rng if rng is not None else random.Random()
        self._router = Router(self.base_urls, rng=rng)
        self._budget = RetryBudget(
            self.hedging.budget_ratio,
            window_s=self.hedging.budget_window_s,
            min_extra=self.hedging.budget_min,
        )
        self._endpoints = {url: self._new_endpoint(url, rng) for url in self.base_urls}
        self._owns_transport = transport is None or isinstance(transport, str)
        self._transport = self._make_transport(transport, ssl_context, verify)
        self._closed = False
        self._last_seen = 0.0

    def _new_endpoint(self, url: str, rng: random.Random) -> Endpoint:
        breaker = CircuitBreaker(
            failure_threshold=self.breaker.failures,
            base_cooldown_s=self.breaker.base_cooldown_s,
            max_cooldown_s=self.breaker.max_cooldown_s,
            rng=rng,
        )
        return Endpoint(url, breaker)

    def _make_transport(
        self,
        transport: Transport | Literal["trio", "asyncio", "httpx"] | None,
        ssl_context: ssl.SSLContext | None,
        verify: bool,
    ) -> Transport:
        # Checked for every transport, so no choice of transport can quietly
        # verify what the caller asked not to, or skip checks it asked for.
        if ssl_context is not None and not verify:
            raise ValueError("give ssl_context or verify=False, not both")
        if not self._owns_transport and (ssl_context is not None or not verify):
            raise ValueError(
                "ssl_context and verify apply to a transport the client makes; "
                "set them on the transport you pass instead"
            )
        timeouts, pool = self.timeouts, self.pool
        if transport is None or transport in ("trio", "asyncio"):
            kinds: dict[str | None, type[LoopTransport | TrioTransport | AsyncioTransport]]
            kinds = {None: LoopTransport, "trio": TrioTransport, "asyncio": AsyncioTransport}
            kind = kinds[transport]
            return kind(
                connect_timeout_s=timeouts.connect_s,
                read_timeout_s=timeouts.read_s,
                max_connections_per_endpoint=pool.max_connections_per_endpoint,
                ssl_context=ssl_context,
                verify=verify,
            )
        if transport == "httpx":
            if not verify:
                warn_verification_off(stacklevel=3)
            return HttpxTransport(
                connect_timeout_s=timeouts.connect_s,
                read_timeout_s=timeouts.read_s,
                max_connections_per_endpoint=pool.max_connections_per_endpoint,
                verify=ssl_context if ssl_context is not None else verify,
            )
        if isinstance(transport, str):
            raise ValueError(
                f'transport must be None, "trio", "asyncio", "httpx" or a Transport, '
                f"got {transport!r}"
            )
        return transport

    # Flat views of the settings, as before the option objects.
    @property
    def hedge_delay_s(self) -> float | None:
        return self.hedging.delay_s

    @property
    def max_attempts(self) -> int:
        return self.hedging.max_attempts

    @property
    def timeout_s(self) -> float | None:
        return self.timeouts.request_s

    @property
    def close_timeout_s(self) -> float:
        return float(self.timeouts.close_s)

    @property
    def max_line_bytes(self) -> int:
        return self.pool.max_line_bytes

    def __repr__(self) -> str:
        return f"OrpheusTTS({list(self.base_urls)!r}, hedge_ttfb_ms={self._hedge_ms()!r})"

    def _hedge_ms(self) -> float | None:
        return None if self.hedge_delay_s is None else self.hedge_delay_s * 1000.0

    # -- public API ---------------------------------------------------------

    @staticmethod
    def local(
        model: str | os.PathLike[str] | None,
        snac: str | os.PathLike[str],
        *,
        device: str | None = None,
        llm_url: str | None = None,
        **options: Any,
    ) -> LocalSynthesizer:
        """On-box synthesis with no server: the same ``stream`` / ``synthesize`` /
        ``open_stream`` API, from a local Orpheus checkpoint and SNAC decoder.

        Loads both (blocking); needs the ``local`` extra. With ``llm_url`` (and
        ``model=None``) the LLM runs on that inference engine (vLLM, SGLang,
        llama-server) and only SNAC runs here. ``options``: see
        :meth:`~orpheus_trio.local.synthesizer.LocalSynthesizer.load`.
        """
        from .local.synthesizer import LocalSynthesizer

        return LocalSynthesizer.load(model, snac, device=device, llm_url=llm_url, **options)

    @asynccontextmanager
    async def open_stream(
        self,
        text: str,
        voice: str | None = None,
        *,
        timeout_s: float | None = None,
        request_id: str | None = None,
        endpoints: Collection[str] | None = None,
        **params: Any,
    ) -> AsyncIterator[AudioStream]:
        """Race to the first audio; give the winner's :class:`AudioStream`, closed on exit.

        ``request_id`` names the request: attempt ``n`` is sent with
        ``X-Request-Id: <request_id>.<n>`` (a gateway passes its caller's id on).
        ``endpoints``: only these of ``base_urls`` may serve it (a gateway sends
        a voice only to the workers that offer it).
        """
        call = self._make_call(text, voice, timeout_s, params)
        call.request_id = request_id
        if endpoints is not None:
            unknown = set(endpoints).difference(self.base_urls)
            if unknown or not endpoints:
                raise ValueError(
                    f"endpoints must be a non-empty subset of base_urls, got {sorted(endpoints)!r}"
                )
            call.endpoints = frozenset(endpoints)
        audio = await self._start(call)
        try:
            yield audio
        finally:
            await audio.aclose()

    def endpoints(self) -> list[EndpointSnapshot]:
        """A snapshot of every endpoint's routing and breaker state, in ``base_urls`` order."""
        now = self._now()
        snapshots = []
        for record in self._endpoints.values():
            url, breaker = record.url, record.breaker
            snapshots.append(
                EndpointSnapshot(
                    url=url,
                    score=self._router.score(url, now),
                    latency_estimate_s=self._router.latency_estimate_s(url),
                    queue_hint=self._router.queue_hint(url, now),
                    in_flight=self._router.in_flight(url),
                    breaker_state=breaker.state(now).value,
                    breaker_retry_in_s=breaker.retry_in_s(now),
                    attempts=record.attempts,
                    wins=record.wins,
                    failures=record.failures,
                    hedges=record.hedges,
                    failovers=record.failovers,
                )
            )
        return snapshots

    async def close(self) -> None:
        """Close pooled connections (and the transport, when the client made it)."""
        self._closed = True
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the request --------------------------------------------------------

    def _now(self) -> float:
        try:
            return anyio.current_time()
        except RuntimeError:
            return self._last_seen  # outside a loop: the state as of the last request

    def _make_call(
        self,
        text: str,
        voice: str | None,
        timeout_s: float | None,
        params: dict[str, Any],
    ) -> Call:
        if self._closed:
            raise RuntimeError("OrpheusTTS client is closed")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        if voice is not None and not isinstance(voice, str):
            raise TypeError(f"voice must be a str or None, got {type(voice).__name__}")
        timeout = positive_seconds("timeout_s", timeout_s) or self.timeout_s
        now = self._last_seen = anyio.current_time()
        deadline = now + timeout if timeout is not None else math.inf
        body: dict[str, Any] = {"text": text, "voice": voice, **params}
        return Call(body=body, started=now, deadline=deadline)

    def _allowed(self, now: float, call: Call) -> list[str]:
        """Endpoints an attempt may go to now: breaker closed (or probing), in the
        call's set; of those, the ones not inside a ``Retry-After`` if any are."""
        allowed = [
            record
            for record in self._endpoints.values()
            if record.breaker.can_attempt(now)
            and (call.endpoints is None or record.url in call.endpoints)
        ]
        ready = [record for record in allowed if record.busy_until <= now]
        return [record.url for record in (ready or allowed)]

    async def _start(self, call: Call) -> AudioStream:
        now = anyio.current_time()
        self._budget.record_request(now)
        first = self._router.choose(now, allowed=self._allowed(now, call), spread=True)
        if first is None:
            candidates = [
                url for url in self.base_urls if call.endpoints is None or url in call.endpoints
            ]
            retry_in = min(self._endpoints[url].breaker.retry_in_s(now) for url in candidates)
            raise CircuitOpenError(candidates, retry_in_s=retry_in)
        self._reserve(first, now)
        plan = _Plan(self, call, first)
        with anyio.CancelScope(deadline=call.deadline) as deadline_scope:
            audio = await race(
                lambda: self._attempt(call, first), plan, hedge_delay_s=self.hedge_delay_s
            )
        if deadline_scope.cancelled_caught:
            tried = len(plan.tried)
            raise DeadlineExceeded(
                f"no audio within the client deadline ({tried} attempt{'s' * (tried != 1)})"
            )
        self._endpoints[audio.endpoint].wins += 1
        audio.attempts = len(plan.tried)
        return audio

    def _request(self, call: Call, endpoint: str, request_id: str) -> StreamRequest:
        body = dict(call.body)
        if math.isfinite(call.deadline):
            remaining = max(0.001, call.deadline - anyio.current_time())
            body["timeout_s"] = round(remaining, 3)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/x-ndjson",
            "X-Request-Id": request_id,
        }
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.value}"
        return StreamRequest(
            endpoint=endpoint,
            path=STREAM_PATH,
            headers=headers,
            body=json.dumps(body).encode(),
        )

    def _reserve(self, endpoint: str, now: float) -> None:
        """Count an attempt against ``endpoint`` as soon as it is chosen.

        Done at choice time, not when the attempt task runs, so that requests
        started in the same instant see each other (no herding onto one cold
        endpoint) and only one of them takes a half-open breaker's probe.
        """
        self._router.on_start(endpoint)
        record = self._endpoints[endpoint]
        record.breaker.on_attempt(now)
        record.attempts += 1

    def _redact(self, text: str) -> str:
        """A server's words with this client's key blanked out (it may echo the header)."""
        return self._api_key.redact(text) if self._api_key is not None else text

    def _unauthorized_hint(self) -> str:
        if self._api_key is None:
            return "no API key was sent: pass api_key=..., or --api-key / ORPHEUS_KEY to the CLI"
        return "the API key was refused: check api_key, or --api-key / ORPHEUS_KEY for the CLI"

    async def _attempt(self, call: Call, endpoint: str) -> AudioStream:
        """One attempt (already reserved): open the stream and read up to its first audio."""
        call.attempts_sent += 1
        request_id = (
            uuid.uuid4().hex
            if call.request_id is None
            else f"{call.request_id}.{call.attempts_sent}"
        )
        started = anyio.current_time()
        reader: FrameReader | None = None
        try:
            response = await self._transport.open_stream(self._request(call, endpoint, request_id))
            reader = FrameReader(
                response,
                endpoint=endpoint,
                max_line_bytes=self.max_line_bytes,
                on_metrics=lambda frame: self._observe_metrics(endpoint, frame),
                redact=self._redact,
                body_rate=self.timeouts.body_rate(),
            )
            self._observe_queue_header(endpoint, response.headers)
            if response.status != 200:
                raise await read_status_error(
                    response,
                    endpoint,
                    request_id,
                    redact=self._redact,
                    unauthorized_hint=self._unauthorized_hint(),
                )
            request_id = response.headers.get("x-request-id", request_id)
            first = await reader.next_frame()
            if first is None:  # the decoder raises first: eos or error would have ended it
                raise IncompleteStreamError(f"stream from {endpoint} ended before any audio")
            reader.push_back(first)
        except BaseException as error:
            self._attempt_failed(endpoint, error, anyio.current_time() - started)
            if reader is not None:
                await close_quietly(reader.response, self.close_timeout_s)
            raise
        now = anyio.current_time()
        self._router.observe_ttfb(endpoint, now - started, now)
        self._endpoints[endpoint].breaker.on_success(now)
        return AudioStream(
            reader,
            request_id=request_id,
            ttfb_s=now - call.started,
            attempts=call.attempts_sent,
            deadline=call.deadline,
            release=lambda error: self._release(endpoint, error),
            close_timeout_s=self.close_timeout_s,
            warn_truncation=self.truncation_warning,
        )

    # -- feedback into policy -------------------------------------------------

    def _attempt_failed(self, endpoint: str, error: BaseException, waited_s: float) -> None:
        """Feed one failed (or cancelled) attempt into routing and the breaker."""
        now = anyio.current_time()
        record = self._endpoints[endpoint]
        self._router.on_end(endpoint)
        verdict = self._policy.judge(error)
        if verdict.blame is Blame.ENDPOINT:
            record.breaker.on_failure(now)
            record.failures += 1
            self._router.observe_failure(endpoint, now)
            return
        record.breaker.on_abandoned(now)
        if verdict.blame is Blame.BUSY:
            self._router.observe_failure(endpoint, now)
            if verdict.retry_after_s:
                record.busy_until = max(record.busy_until, now + verdict.retry_after_s)
        elif isinstance(error, anyio.get_cancelled_exc_class()):
            self._router.observe_no_audio_after(endpoint, waited_s, now)

    def _observe_queue_header(self, endpoint: str, headers: Mapping[str, str]) -> None:
        value = headers.get("x-queue-depth")
        if value is not None:
            try:
                depth = float(value)
            except ValueError:
                return  # a malformed hint is ignored, not fatal
            self._router.observe_queue_depth(endpoint, depth, anyio.current_time())

    def _observe_metrics(self, endpoint: str, frame: Metrics) -> None:
        # A frame splits the load the X-Queue-Depth header sums: ``queue_depth``
        # waiting, ``inflight`` running. Add them so both hints mean the same.
        depth = _number(frame.values.get("queue_depth"))
        if depth is not None:
            load = depth + (_number(frame.values.get("inflight")) or 0.0)
            self._router.observe_queue_depth(endpoint, load, anyio.current_time())

    def _release(self, endpoint: str, error: BaseException | None) -> None:
        """The winner's stream ended (``error``: how, if it failed)."""
        self._router.on_end(endpoint)
        if error is not None and self._policy.blames_endpoint(error):
            self._endpoints[endpoint].breaker.on_failure(anyio.current_time())
            self._endpoints[endpoint].failures += 1
