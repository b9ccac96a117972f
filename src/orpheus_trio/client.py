"""``OrpheusTTS``: the client users build on.

The I/O shell around the sans-IO policies: :class:`~._policy.attempts.Attempts`
decides where each attempt goes and what its outcome teaches (routing, the
retry budget, one breaker per endpoint, the failure policy), :mod:`.hedge`
races attempts, a :mod:`~.transports` transport does HTTP and :mod:`.stream`
reads the body. Written on AnyIO, so it runs natively under Trio and asyncio.
The shell reads the clock (``anyio.current_time()``, Trio's clock under Trio)
once per event and hands that time to the policy, so ``trio.testing.MockClock``
drives every policy in tests. Settings are :mod:`.options` values.
"""

from __future__ import annotations

import enum
import json
import math
import os
import random
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio

from ._policy.attempts import Attempts, Reason, Tries
from ._policy.endpoints import STREAM_PATH, EndpointSnapshot, normalize_urls
from ._policy.failure import FailurePolicy
from .apikey import Secret, check_api_key
from .errors import DeadlineExceeded, IncompleteStreamError
from .hedge import race
from .options import Breaker, Hedging, Pool, Timeouts, positive_seconds
from .protocol.frames import Metrics
from .speech import SpeechSource
from .stream import AudioStream, Call, FrameReader, close_quietly, read_status_error
from .transports.asyncio import AsyncioTransport
from .transports.base import HttpxTransport, StreamRequest, Transport
from .transports.loop import LoopTransport
from .transports.trio import TrioTransport

# After .transports: the pool imports transports.base, whose package imports the pool.
from ._http.pool import warn_verification_off

if TYPE_CHECKING:
    from .local.synthesizer import LocalSynthesizer

__all__ = ["AudioStream", "EndpointSnapshot", "OrpheusTTS", "STREAM_PATH"]


class _Unset(enum.Enum):
    """A shorthand keyword that was not given (its group's value stands)."""

    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "<the group's value>"  # as help() shows the signature


_UNSET = _Unset.UNSET


class _Plan:
    """One request's side of the race: asks the client's :class:`Attempts` for
    the next endpoint, with the time it read once for that event."""

    __slots__ = ("_call", "_client", "tries")

    def __init__(self, client: OrpheusTTS, call: Call, tries: Tries) -> None:
        self._client = client
        self._call = call
        self.tries = tries

    def next_attempt(self, reason: Reason) -> Callable[[], Awaitable[AudioStream]] | None:
        client = self._client
        endpoint = client._attempts.next(self.tries, reason, anyio.current_time())
        if endpoint is None:
            return None
        call = self._call
        return lambda: client._attempt(call, endpoint)

    def is_retryable(self, error: Exception) -> bool:
        return self._client._attempts.retryable(error)

    async def discard(self, result: AudioStream) -> None:
        await result.aclose()


class OrpheusTTS(SpeechSource):
    """Streams Orpheus speech from one gateway or several workers, hedged and failed over.

    ``base_urls``: one URL or several (each ``http(s)://host[:port]``).
    ``api_key``: sent as ``Authorization: Bearer <key>``.

    Settings come in four groups, :mod:`~orpheus_trio.options` values:
    ``timeouts`` (:class:`~orpheus_trio.options.Timeouts`: the request
    deadline, connect, read and close timeouts, the least body rate),
    ``hedging`` (:class:`~orpheus_trio.options.Hedging`: the hedge delay,
    attempts per request, the extra-attempt budget), ``breaker``
    (:class:`~orpheus_trio.options.Breaker`) and ``pool``
    (:class:`~orpheus_trio.options.Pool`: connections per endpoint, longest
    NDJSON line). Two settings have a shorthand keyword that sets that one
    field of its group (and wins over it): ``hedge_ttfb_ms`` (``Hedging.ttfb_ms``:
    start a backup attempt when no audio arrived this long after the last
    attempt started; ``None`` or ``0`` turns hedging off, failover stays on)
    and ``timeout_s`` (``Timeouts.request_s``: the default per-request deadline).

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
    """

    def __init__(
        self,
        base_urls: str | Sequence[str],
        api_key: str | None = None,
        hedge_ttfb_ms: float | None | _Unset = _UNSET,
        *,
        timeout_s: float | None | _Unset = _UNSET,
        timeouts: Timeouts | None = None,
        hedging: Hedging | None = None,
        breaker: Breaker | None = None,
        pool: Pool | None = None,
        transport: Transport | Literal["trio", "asyncio", "httpx"] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
        rng: random.Random | None = None,
        endpoint_fault_status: Collection[int] = (),
        truncation_warning: bool = True,
    ) -> None:
        self.base_urls = normalize_urls(base_urls)
        self._api_key = Secret(check_api_key(api_key)) if api_key is not None else None
        for name, group, kind in (
            ("timeouts", timeouts, Timeouts),
            ("hedging", hedging, Hedging),
            ("breaker", breaker, Breaker),
            ("pool", pool, Pool),
        ):
            if group is not None and not isinstance(group, kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(group).__name__}")
        hedging = hedging or Hedging()
        if hedge_ttfb_ms is not _UNSET:
            hedging = replace(hedging, ttfb_ms=hedge_ttfb_ms)
        timeouts = timeouts or Timeouts()
        if timeout_s is not _UNSET:
            timeouts = replace(timeouts, request_s=timeout_s)
        self.hedging = hedging
        self.timeouts = timeouts
        self.breaker = breaker or Breaker()
        self.pool = pool or Pool()
        self.truncation_warning = truncation_warning
        rng = rng if rng is not None else random.Random()
        self._attempts = Attempts(
            self.base_urls,
            max_attempts=hedging.max_attempts,
            budget_ratio=hedging.budget_ratio,
            budget_min=hedging.budget_min,
            budget_window_s=hedging.budget_window_s,
            breaker_failures=self.breaker.failures,
            base_cooldown_s=self.breaker.base_cooldown_s,
            max_cooldown_s=self.breaker.max_cooldown_s,
            failure=FailurePolicy(frozenset(endpoint_fault_status)),
            rng=rng,
        )
        self._owns_transport = transport is None or isinstance(transport, str)
        self._transport = self._make_transport(transport, ssl_context, verify)
        self._closed = False
        self._last_seen = 0.0

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

    def __repr__(self) -> str:
        delay_s = self.hedging.delay_s
        hedge_ms = None if delay_s is None else delay_s * 1000.0
        return f"OrpheusTTS({list(self.base_urls)!r}, hedge_ttfb_ms={hedge_ms!r})"

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
        return self._attempts.snapshots(self._now())

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
        timeout = positive_seconds("timeout_s", timeout_s) or self.timeouts.request_s
        now = self._last_seen = anyio.current_time()
        deadline = now + timeout if timeout is not None else math.inf
        body: dict[str, Any] = {"text": text, "voice": voice, **params}
        return Call(body=body, started=now, deadline=deadline)

    async def _start(self, call: Call) -> AudioStream:
        # The request starts when its call was made (no checkpoint since): one clock read.
        tries = self._attempts.start(call.started, deadline=call.deadline, only=call.endpoints)
        first = tries.tried[0]
        plan = _Plan(self, call, tries)
        with anyio.CancelScope(deadline=call.deadline) as deadline_scope:
            audio = await race(
                lambda: self._attempt(call, first), plan, hedge_delay_s=self.hedging.delay_s
            )
        if deadline_scope.cancelled_caught:
            tried = len(tries.tried)
            raise DeadlineExceeded(
                f"no audio within the client deadline ({tried} attempt{'s' * (tried != 1)})"
            )
        self._attempts.on_won(audio.endpoint)
        audio.attempts = len(tries.tried)
        return audio

    def _request(self, call: Call, endpoint: str, request_id: str, now: float) -> StreamRequest:
        body = dict(call.body)
        if math.isfinite(call.deadline):
            remaining = max(0.001, call.deadline - now)
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

    def _redact(self, text: str) -> str:
        """A server's words with this client's key blanked out (it may echo the header)."""
        return self._api_key.redact(text) if self._api_key is not None else text

    def _redact_error(self, error: BaseException) -> None:
        """Blank this client's key out of an error's message, and out of those of its
        causes and contexts: a transport's words may quote what a server sent (a
        malformed header line, say)."""
        if self._api_key is None:
            return
        seen: set[int] = set()
        todo: list[BaseException | None] = [error]
        while todo:
            current = todo.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            args = tuple(self._redact(a) if isinstance(a, str) else a for a in current.args)
            if args != current.args:
                current.args = args
            todo += (current.__cause__, current.__context__)

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
        attempts = self._attempts
        close_s = float(self.timeouts.close_s)
        started = anyio.current_time()
        reader: FrameReader | None = None
        try:
            response = await self._transport.open_stream(
                self._request(call, endpoint, request_id, started)
            )
            reader = FrameReader(
                response,
                endpoint=endpoint,
                max_line_bytes=self.pool.max_line_bytes,
                on_metrics=lambda frame: self._observe_metrics(endpoint, frame),
                redact=self._redact,
                body_rate=self.timeouts.body_rate(),
            )
            attempts.on_queue_header(
                endpoint, response.headers.get("x-queue-depth"), anyio.current_time()
            )
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
            cancelled = isinstance(error, anyio.get_cancelled_exc_class())
            attempts.on_attempt_failed(
                endpoint, error, started, anyio.current_time(), cancelled=cancelled
            )
            if not cancelled:
                self._redact_error(error)
            if reader is not None:
                await close_quietly(reader.response, close_s)
            raise
        now = anyio.current_time()
        attempts.on_first_audio(endpoint, started, now)
        return AudioStream(
            reader,
            request_id=request_id,
            ttfb_s=now - call.started,
            attempts=call.attempts_sent,
            deadline=call.deadline,
            release=lambda error: self._released(endpoint, error),
            close_timeout_s=close_s,
            warn_truncation=self.truncation_warning,
        )

    def _released(self, endpoint: str, error: BaseException | None) -> None:
        """The winner's stream ended (``error``: how, if it failed, before it propagates)."""
        self._attempts.on_released(endpoint, error, anyio.current_time())
        if error is not None and not isinstance(error, anyio.get_cancelled_exc_class()):
            self._redact_error(error)

    def _observe_metrics(self, endpoint: str, frame: Metrics) -> None:
        self._attempts.on_metrics(endpoint, frame.values, anyio.current_time())
