"""``OrpheusTTS``: the client users build on.

The I/O shell around the sans-IO policies: :mod:`routing` picks endpoints,
:mod:`hedge` races attempts, :mod:`budget` bounds extra attempts,
:mod:`breaker` guards each endpoint, :mod:`transport` does HTTP and
:mod:`frames` decodes the body. Timings come from ``trio.current_time()``, so
``trio.testing.MockClock`` drives every policy in tests.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import ssl
import uuid
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

import httpx
import trio

from ._callsite import warn_at_caller
from .apikey import check_api_key
from .breaker import CircuitBreaker
from .budget import RetryBudget
from .errors import (
    RETRYABLE_STATUS,
    CircuitOpenError,
    DeadlineExceeded,
    HTTPStatusError,
    IncompleteStreamError,
    ProtocolError,
    ServiceError,
    TruncatedSpeechWarning,
)
from .frames import (
    DEFAULT_MAX_LINE_BYTES,
    Chunk,
    EndOfStream,
    ErrorFrame,
    Frame,
    FrameDecoder,
    Metrics,
)
from .hedge import Reason, race
from .routing import Router
from .speech import SpeechSource
from .transport import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
    DEFAULT_READ_TIMEOUT_S,
    HttpxTransport,
    ResponseStream,
    StreamRequest,
    Transport,
)
from .trio_transport import TrioTransport, warn_verification_off

if TYPE_CHECKING:
    from .local.synthesizer import LocalSynthesizer

__all__ = ["AudioStream", "EndpointSnapshot", "OrpheusTTS"]

STREAM_PATH = "/v1/tts/stream"
#: Longest error body read from a non-2xx answer.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: In-band error codes after which another endpoint may do better (before any audio).
RETRYABLE_SERVICE_CODES = frozenset(
    {"engine_error", "internal", "cancelled", "unavailable"}
)
#: Statuses that say "busy" rather than "broken": fail over, but do not trip the breaker.
BUSY_STATUS = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class EndpointSnapshot:
    """One endpoint's state, as :meth:`OrpheusTTS.endpoints` reports it.

    ``score``: expected cost of the next request there (lower is better).
    ``latency_estimate_s``: peak-EWMA time to first audio, ``None`` while cold.
    ``queue_hint``: the server's last queue depth, faded by age.
    ``in_flight``: this client's open attempts there.
    ``breaker_state``: ``"closed"``, ``"open"`` or ``"half_open"``;
    ``breaker_retry_in_s``: seconds until an attempt may go there again.
    ``attempts``, ``wins``, ``failures``: counts since the client was made;
    ``hedges`` and ``failovers``: how many of those attempts were started as such.
    """

    url: str
    score: float
    latency_estimate_s: float | None
    queue_hint: float
    in_flight: int
    breaker_state: str
    breaker_retry_in_s: float
    attempts: int
    wins: int
    failures: int
    hedges: int = 0
    failovers: int = 0


@dataclass(slots=True)
class _Counts:
    attempts: int = 0
    wins: int = 0
    failures: int = 0
    hedges: int = 0
    failovers: int = 0


class _Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


@dataclass(slots=True)
class _Call:
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


@dataclass(slots=True)
class _Opened:
    """An attempt that reached its first audio (or a zero-chunk ``eos``)."""

    endpoint: str
    request_id: str
    response: ResponseStream
    decoder: FrameDecoder
    pending: list[Frame]
    first_audio_at: float
    #: Values of the ``metrics`` frames read before the first audio, merged.
    metrics: dict[str, Any]


_DEFAULT_PORTS = {"http": 80, "https": 443}
#: A host name or an IP address (IPv6 without its brackets, as urlsplit gives it).
_HOST = re.compile(r"[A-Za-z0-9._\-:%]+")


def _normalize_urls(base_urls: str | Sequence[str]) -> tuple[str, ...]:
    urls = (base_urls,) if isinstance(base_urls, str) else tuple(base_urls)
    if not urls:
        raise ValueError("base_urls is empty: give at least one endpoint URL")
    normalized = []
    seen: dict[tuple[str, str, int, str], str] = {}
    for url in urls:
        if not isinstance(url, str):
            raise TypeError(f"endpoint URLs must be str, got {type(url).__name__}")
        parts = urlsplit(url)
        if "@" in parts.netloc:  # not echoed: the URL holds credentials
            raise ValueError(
                "endpoint URL must be http(s)://host[:port][/path], without credentials "
                "(give the key as api_key)"
            )
        scheme = parts.scheme.lower()
        if (
            scheme not in _DEFAULT_PORTS
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"endpoint URL must be http(s)://host[:port][/path], got {url!r}"
            )
        host = parts.hostname
        if not host or not _HOST.fullmatch(host):
            raise ValueError(f"endpoint URL {url!r} has no valid host")
        try:
            port = parts.port
        except ValueError as error:  # not a number, or past 65535
            raise ValueError(f"endpoint URL {url!r} has a bad port: {error}") from None
        if port == 0:
            raise ValueError(f"endpoint URL {url!r} has a bad port: 0")
        # One server under two spellings would be routed, hedged and broken as two.
        key = (scheme, host.lower(), port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/"))
        if key in seen:
            raise ValueError(f"endpoint URLs {seen[key]!r} and {url!r} name the same server twice")
        seen[key] = url
        normalized.append(url.rstrip("/"))
    return tuple(normalized)


def _positive_or_none(
    name: str, value: float | None, *, none_allowed: bool = True
) -> float | None:
    if value is None and none_allowed:
        return None
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        also = " or None" if none_allowed else ""
        raise ValueError(
            f"{name} must be a positive number of seconds{also}, got {value!r}"
        )
    return float(value)


async def _close_quietly(response: ResponseStream, limit_s: float) -> None:
    """Close a response even while cancelled, giving up after ``limit_s``."""
    with trio.move_on_after(limit_s, shield=True):
        try:
            await response.aclose()
        except (httpx.HTTPError, OSError, trio.BrokenResourceError):
            pass  # closing a broken response may fail; the connection is dropped either way


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
        self, client: OrpheusTTS, opened: _Opened, *, call: _Call, attempts: int
    ) -> None:
        self.endpoint = opened.endpoint
        self.request_id = opened.request_id
        self.ttfb_s = opened.first_audio_at - call.started
        self.attempts = attempts
        self.metrics: dict[str, Any] = dict(opened.metrics)
        self._client = client
        self._response: ResponseStream | None = opened.response
        self._decoder = opened.decoder
        self._pending: deque[Frame] = deque(opened.pending)
        self._deadline = call.deadline
        self._chunks = 0
        self._finished = False
        self._body_ended = False

    def __repr__(self) -> str:
        return (
            f"AudioStream(endpoint={self.endpoint!r}, request_id={self.request_id!r})"
        )

    @property
    def truncated(self) -> bool:
        """The service said the reply was cut short (``max_tokens`` reached)."""
        return self.metrics.get("truncated") is True

    def __aiter__(self) -> AudioStream:
        return self

    async def __anext__(self) -> bytes:
        if self._response is None:  # ended, failed or closed: spent, as a generator is
            raise StopAsyncIteration
        try:
            while True:
                while self._pending:
                    pcm = self._handle(self._pending.popleft())
                    if pcm:
                        return pcm
                if self._finished:
                    break
                # A bad line that shared the last read with good frames is raised by the
                # decoder's next call: make that call now, not after more bytes come.
                self._decoder.feed(b"")
                data = await self._receive()
                if data:
                    self._pending.extend(self._decoder.feed(data))
                else:
                    self._decoder.close()  # raises IncompleteStreamError unless eos/error arrived
                    self._finished = self._body_ended = True
            if not self._body_ended:
                await self._read_body_end()
        except BaseException as error:
            await self._close(failed=_counts_against_endpoint(error))
            raise
        # The body was read to its end: the connection goes back to the pool.
        await self._close(failed=False)
        raise StopAsyncIteration

    async def _read_body_end(self) -> None:
        """After ``eos``, read the HTTP body's end too, else the connection cannot be reused."""
        assert self._response is not None
        with trio.move_on_after(self._client.close_timeout_s):
            try:
                while data := await self._response.receive():
                    if data.strip():
                        return  # junk after eos: the connection is not reused
            except (httpx.HTTPError, OSError, trio.BrokenResourceError):
                return  # the audio is complete; the connection is dropped

    def _handle(self, frame: Frame) -> bytes | None:
        if isinstance(frame, Chunk):
            self._chunks += 1
            return frame.pcm
        if isinstance(frame, Metrics):
            self._client._observe_metrics(self.endpoint, frame)
            self.metrics.update(frame.values)
            return None
        self._finished = True
        if isinstance(frame, EndOfStream):
            if self.truncated and self._client.truncation_warning:
                warn_at_caller(
                    f"{self.endpoint} cut the speech short "
                    f"(finish_reason {self.metrics.get('finish_reason')!r}): "
                    "the audio stops early",
                    TruncatedSpeechWarning,
                )
            return None
        assert isinstance(frame, ErrorFrame)
        raise _service_error(frame, self.endpoint)

    async def _receive(self) -> bytes:
        if self._response is None:
            raise RuntimeError("the audio stream is closed")
        try:
            if self._deadline == math.inf:  # no deadline: spare a cancel scope per read
                return await self._response.receive()
            with trio.fail_at(self._deadline):
                return await self._response.receive()
        except trio.TooSlowError:
            raise DeadlineExceeded(
                f"client deadline passed after {self._chunks} chunks",
                endpoint=self.endpoint,
            ) from None
        except IncompleteStreamError:
            raise
        except (httpx.ReadError, httpx.RemoteProtocolError) as error:
            raise IncompleteStreamError(
                f"connection to {self.endpoint} broke mid-stream: {error}",
                chunks_received=self._chunks,
            ) from error

    async def aclose(self) -> None:
        """Close the HTTP stream now (idempotent); the rest of the audio is dropped."""
        await self._close(failed=False)

    async def _close(self, *, failed: bool) -> None:
        response = self._response
        if response is None:
            return
        self._response = None
        self._finished = True
        self._pending.clear()
        self._client._release(self.endpoint, failed=failed)
        await _close_quietly(response, self._client.close_timeout_s)


def _service_error(frame: ErrorFrame, endpoint: str) -> ServiceError:
    if frame.code == "deadline_exceeded":
        return DeadlineExceeded(frame.message, endpoint=endpoint)
    return ServiceError(frame.code, frame.message, endpoint=endpoint)


class _Plan:
    """The race policy for one request: next endpoint, budget, retryable errors."""

    def __init__(self, client: OrpheusTTS, call: _Call, first_endpoint: str) -> None:
        self._client = client
        self._call = call
        self.tried = [first_endpoint]

    def next_attempt(self, reason: Reason) -> Callable[[], Awaitable[_Opened]] | None:
        client = self._client
        if len(self.tried) >= client.max_attempts:
            return None
        now = trio.current_time()
        if now >= self._call.deadline:
            return None
        allowed = client._allowed(now, self._call)
        endpoint = client._router.choose(
            now, allowed=allowed, exclude=self.tried, spread=False
        )
        if endpoint is None:
            # Every allowed endpoint was tried: go again (a gateway routes it elsewhere).
            endpoint = client._router.choose(now, allowed=allowed, spread=False)
        if endpoint is None or not client._budget.try_spend(now):
            return None
        self.tried.append(endpoint)
        client._reserve(endpoint, now)
        counts = client._counts[endpoint]
        if reason == "hedge":
            counts.hedges += 1
        else:
            counts.failovers += 1
        return lambda: client._attempt(self._call, endpoint)

    def is_retryable(self, error: Exception) -> bool:
        if isinstance(error, HTTPStatusError):
            return error.retryable or self._client._is_endpoint_fault(error)
        if isinstance(error, DeadlineExceeded):
            return False
        if isinstance(error, ServiceError):
            return error.code in RETRYABLE_SERVICE_CODES
        return isinstance(error, (httpx.TransportError, ProtocolError))

    async def discard(self, result: _Opened) -> None:
        self._client._release(result.endpoint, failed=False)
        await _close_quietly(result.response, self._client.close_timeout_s)


class OrpheusTTS(SpeechSource):
    """Streams Orpheus speech from one gateway or several workers, hedged and failed over.

    ``base_urls``: one URL or several (each ``http(s)://host[:port]``).
    ``hedge_ttfb_ms``: start a backup attempt when no audio arrived this long
    after the last attempt started; ``None`` or ``0`` turns hedging off
    (failover stays on). ``timeout_s``: default per-request deadline.
    ``transport``: the HTTP engine: ``"trio"`` (the default,
    :class:`~orpheus_trio.trio_transport.TrioTransport`), ``"httpx"``
    (:class:`~orpheus_trio.transport.HttpxTransport`) or a
    :class:`~orpheus_trio.transport.Transport` you made (and close).
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
    """

    def __init__(
        self,
        base_urls: str | Sequence[str],
        api_key: str | None = None,
        hedge_ttfb_ms: float | None = 400,
        *,
        timeout_s: float | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
        max_connections_per_endpoint: int = DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
        max_attempts: int = 3,
        hedge_budget_ratio: float = 0.1,
        hedge_budget_min: int = 3,
        hedge_budget_window_s: float = 10.0,
        breaker_failures: int = 5,
        breaker_base_cooldown_s: float = 5.0,
        breaker_max_cooldown_s: float = 60.0,
        close_timeout_s: float = 1.0,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        transport: Transport | Literal["trio", "httpx"] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
        rng: random.Random | None = None,
        endpoint_fault_status: Collection[int] = (),
        truncation_warning: bool = True,
    ) -> None:
        self.base_urls = _normalize_urls(base_urls)
        if api_key is not None:
            check_api_key(api_key)
        if hedge_ttfb_ms is not None and (
            hedge_ttfb_ms < 0 or not math.isfinite(hedge_ttfb_ms)
        ):
            raise ValueError(
                f"hedge_ttfb_ms must be >= 0 or None, got {hedge_ttfb_ms!r}"
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        self.hedge_delay_s = hedge_ttfb_ms / 1000.0 if hedge_ttfb_ms else None
        self.timeout_s = _positive_or_none("timeout_s", timeout_s)
        # Checked here rather than failing late, inside the first request, with trio's message.
        _positive_or_none("connect_timeout_s", connect_timeout_s, none_allowed=False)
        _positive_or_none("read_timeout_s", read_timeout_s)
        self.max_attempts = max_attempts
        if not (
            isinstance(close_timeout_s, (int, float))
            and close_timeout_s >= 0
            and math.isfinite(close_timeout_s)
        ):
            raise ValueError(
                f"close_timeout_s must be a finite number of seconds >= 0, got {close_timeout_s!r}"
            )
        self.close_timeout_s = float(close_timeout_s)
        self.max_line_bytes = max_line_bytes
        self._api_key = _Secret(api_key) if api_key is not None else None
        self._endpoint_fault_status = frozenset(endpoint_fault_status)
        self.truncation_warning = truncation_warning
        rng = rng if rng is not None else random.Random()
        self._router = Router(self.base_urls, rng=rng)
        self._budget = RetryBudget(
            hedge_budget_ratio,
            window_s=hedge_budget_window_s,
            min_extra=hedge_budget_min,
        )
        self._breakers = {
            url: CircuitBreaker(
                failure_threshold=breaker_failures,
                base_cooldown_s=breaker_base_cooldown_s,
                max_cooldown_s=breaker_max_cooldown_s,
                rng=rng,
            )
            for url in self.base_urls
        }
        self._counts = {url: _Counts() for url in self.base_urls}
        self._owns_transport = transport is None or isinstance(transport, str)
        # Checked for every transport, so no choice of transport can quietly
        # verify what the caller asked not to, or skip checks it asked for.
        if ssl_context is not None and not verify:
            raise ValueError("give ssl_context or verify=False, not both")
        if not self._owns_transport and (ssl_context is not None or not verify):
            raise ValueError(
                "ssl_context and verify apply to a transport the client makes; "
                "set them on the transport you pass instead"
            )
        self._transport: Transport
        if transport is None or transport == "trio":
            self._transport = TrioTransport(
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                max_connections_per_endpoint=max_connections_per_endpoint,
                ssl_context=ssl_context,
                verify=verify,
            )
        elif transport == "httpx":
            if not verify:
                warn_verification_off()
            self._transport = HttpxTransport(
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                max_connections_per_endpoint=max_connections_per_endpoint,
                verify=ssl_context if ssl_context is not None else verify,
            )
        elif isinstance(transport, str):
            raise ValueError(f'transport must be "trio", "httpx" or a Transport, got {transport!r}')
        else:
            self._transport = transport
        self._closed = False
        self._last_seen = 0.0

    def __repr__(self) -> str:
        return (
            f"OrpheusTTS({list(self.base_urls)!r}, hedge_ttfb_ms={self._hedge_ms()!r})"
        )

    def _hedge_ms(self) -> float | None:
        return None if self.hedge_delay_s is None else self.hedge_delay_s * 1000.0

    # -- public API ---------------------------------------------------------

    @staticmethod
    def local(
        model: str | os.PathLike[str],
        snac: str | os.PathLike[str],
        *,
        device: str | None = None,
        **options: Any,
    ) -> LocalSynthesizer:
        """On-box synthesis with no server: the same ``stream`` / ``synthesize`` /
        ``open_stream`` API, from a local Orpheus checkpoint and SNAC decoder.

        Loads both (blocking); needs the ``local`` extra. ``options``: see
        :class:`~orpheus_trio.local.synthesizer.LocalSynthesizer`.
        """
        from .local.synthesizer import LocalSynthesizer

        return LocalSynthesizer.load(model, snac, device=device, **options)

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
        for url in self.base_urls:
            breaker = self._breakers[url]
            counts = self._counts[url]
            snapshots.append(
                EndpointSnapshot(
                    url=url,
                    score=self._router.score(url, now),
                    latency_estimate_s=self._router.latency_estimate_s(url),
                    queue_hint=self._router.queue_hint(url, now),
                    in_flight=self._router.in_flight(url),
                    breaker_state=breaker.state(now).value,
                    breaker_retry_in_s=breaker.retry_in_s(now),
                    attempts=counts.attempts,
                    wins=counts.wins,
                    failures=counts.failures,
                    hedges=counts.hedges,
                    failovers=counts.failovers,
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
            return trio.current_time()
        except RuntimeError:
            return self._last_seen  # outside trio: the state as of the last request

    def _make_call(
        self,
        text: str,
        voice: str | None,
        timeout_s: float | None,
        params: dict[str, Any],
    ) -> _Call:
        if self._closed:
            raise RuntimeError("OrpheusTTS client is closed")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        if voice is not None and not isinstance(voice, str):
            raise TypeError(f"voice must be a str or None, got {type(voice).__name__}")
        timeout = _positive_or_none("timeout_s", timeout_s) or self.timeout_s
        now = self._last_seen = trio.current_time()
        deadline = now + timeout if timeout is not None else math.inf
        body: dict[str, Any] = {"text": text, "voice": voice, **params}
        return _Call(body=body, started=now, deadline=deadline)

    def _allowed(self, now: float, call: _Call) -> list[str]:
        return [
            url
            for url in self.base_urls
            if self._breakers[url].can_attempt(now)
            and (call.endpoints is None or url in call.endpoints)
        ]

    async def _start(self, call: _Call) -> AudioStream:
        now = trio.current_time()
        self._budget.record_request(now)
        first = self._router.choose(now, allowed=self._allowed(now, call), spread=True)
        if first is None:
            candidates = [
                url
                for url in self.base_urls
                if call.endpoints is None or url in call.endpoints
            ]
            retry_in = min(self._breakers[url].retry_in_s(now) for url in candidates)
            raise CircuitOpenError(candidates, retry_in_s=retry_in)
        self._reserve(first, now)
        plan = _Plan(self, call, first)
        with trio.move_on_at(call.deadline) as deadline_scope:
            opened = await race(
                lambda: self._attempt(call, first),
                plan,
                hedge_delay_s=self.hedge_delay_s,
            )
        if deadline_scope.cancelled_caught:
            raise DeadlineExceeded(
                f"no audio within the client deadline ({len(plan.tried)} attempts)"
            )
        self._counts[opened.endpoint].wins += 1
        return AudioStream(self, opened, call=call, attempts=len(plan.tried))

    def _request(self, call: _Call, endpoint: str, request_id: str) -> StreamRequest:
        body = dict(call.body)
        if math.isfinite(call.deadline):
            remaining = max(0.001, call.deadline - trio.current_time())
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
        self._breakers[endpoint].on_attempt(now)
        self._counts[endpoint].attempts += 1

    async def _attempt(self, call: _Call, endpoint: str) -> _Opened:
        """One attempt (already reserved): open the stream and read up to its first audio."""
        call.attempts_sent += 1
        request_id = (
            uuid.uuid4().hex
            if call.request_id is None
            else f"{call.request_id}.{call.attempts_sent}"
        )
        started = trio.current_time()
        response: ResponseStream | None = None
        try:
            response = await self._transport.open_stream(
                self._request(call, endpoint, request_id)
            )
            self._observe_queue_header(endpoint, response.headers)
            if response.status != 200:
                raise await _status_error(response, endpoint, request_id)
            request_id = response.headers.get("x-request-id", request_id)
            decoder = FrameDecoder(max_line_bytes=self.max_line_bytes)
            metrics: dict[str, Any] = {}
            while True:
                decoder.feed(b"")  # raises a bad line met after the last read's metrics
                data = await response.receive()
                if not data:
                    decoder.close()  # raises: eos or error would have ended this loop already
                    raise IncompleteStreamError(
                        f"stream from {endpoint} ended before any audio"
                    )
                frames = decoder.feed(data)
                for index, frame in enumerate(frames):
                    if isinstance(frame, (Chunk, EndOfStream)):
                        now = trio.current_time()
                        self._router.observe_ttfb(endpoint, now - started, now)
                        self._breakers[endpoint].on_success(now)
                        return _Opened(
                            endpoint, request_id, response, decoder, frames[index:], now, metrics
                        )
                    if isinstance(frame, Metrics):
                        self._observe_metrics(endpoint, frame)
                        metrics.update(frame.values)
                    elif isinstance(frame, ErrorFrame):
                        raise _service_error(frame, endpoint)
        except BaseException as error:
            now = trio.current_time()
            self._router.on_end(endpoint)
            if _counts_against_endpoint(error) or self._is_endpoint_fault(error):
                self._breakers[endpoint].on_failure(now)
                self._counts[endpoint].failures += 1
                self._router.observe_failure(endpoint, now)
            else:
                self._breakers[endpoint].on_abandoned(now)
                if _is_busy(error):
                    self._router.observe_failure(endpoint, now)
                elif isinstance(error, trio.Cancelled):
                    self._router.observe_no_audio_after(endpoint, now - started, now)
            if response is not None:
                await _close_quietly(response, self.close_timeout_s)
            raise

    # -- feedback into policy -------------------------------------------------

    def _observe_queue_header(self, endpoint: str, headers: Mapping[str, str]) -> None:
        value = headers.get("x-queue-depth")
        if value is not None:
            try:
                depth = float(value)
            except ValueError:
                return  # a malformed hint is ignored, not fatal
            self._router.observe_queue_depth(endpoint, depth, trio.current_time())

    def _observe_metrics(self, endpoint: str, frame: Metrics) -> None:
        # A frame splits the load the X-Queue-Depth header sums: ``queue_depth``
        # waiting, ``inflight`` running. Add them so both hints mean the same.
        depth = _number(frame.values.get("queue_depth"))
        if depth is not None:
            load = depth + (_number(frame.values.get("inflight")) or 0.0)
            self._router.observe_queue_depth(endpoint, load, trio.current_time())

    def _is_endpoint_fault(self, error: BaseException) -> bool:
        return (
            isinstance(error, HTTPStatusError)
            and error.status_code in self._endpoint_fault_status
        )

    def _release(self, endpoint: str, *, failed: bool) -> None:
        """The winner's stream ended."""
        self._router.on_end(endpoint)
        if failed:
            self._breakers[endpoint].on_failure(trio.current_time())
            self._counts[endpoint].failures += 1


def _number(value: object) -> float | None:
    """A JSON number as a float; anything else (bool, string, null) as None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _is_busy(error: BaseException) -> bool:
    return isinstance(error, HTTPStatusError) and error.status_code in BUSY_STATUS


def _counts_against_endpoint(error: BaseException) -> bool:
    """Whether ``error`` says the endpoint is unhealthy (feeds its breaker)."""
    if isinstance(error, HTTPStatusError):
        return (
            error.status_code in RETRYABLE_STATUS
            and error.status_code not in BUSY_STATUS
        )
    if isinstance(error, DeadlineExceeded):
        return False
    if isinstance(error, ServiceError):
        return error.code in ("engine_error", "internal")
    if isinstance(error, httpx.PoolTimeout):
        return False  # our own pool is full; the endpoint did nothing wrong
    return isinstance(error, (httpx.TransportError, ProtocolError))


async def _status_error(
    response: ResponseStream, endpoint: str, request_id: str
) -> HTTPStatusError:
    """Read a non-2xx answer's JSON error body into an :class:`HTTPStatusError`."""
    body = bytearray()
    with trio.move_on_after(5.0):
        while len(body) < MAX_ERROR_BODY_BYTES:
            data = await response.receive()
            if not data:
                break
            body += data
    code, message = (
        f"http_{response.status}",
        bytes(body[:200]).decode("utf-8", "replace").strip(),
    )
    try:
        error = json.loads(bytes(body))["error"]
        code, message = str(error["code"]), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError):
        pass  # not our JSON error shape: keep the status and a snippet of the body
    retry_after: float | None = None
    try:
        retry_after = float(response.headers.get("retry-after", ""))
    except ValueError:
        pass
    url = endpoint + STREAM_PATH
    request = httpx.Request("POST", url, headers={"X-Request-Id": request_id})
    http_response = httpx.Response(
        response.status,
        headers=list(response.headers.items()),
        content=bytes(body),
        request=request,
    )
    return HTTPStatusError(
        status_code=response.status,
        code=code,
        message=message or "(no message)",
        request=request,
        response=http_response,
        retry_after_s=retry_after,
    )
