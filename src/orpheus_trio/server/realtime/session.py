"""One realtime socket's state, sans-IO: JSON messages and engine events in, actions out.

No sockets and no clock here (like h11): the shell (:mod:`.socket`) feeds each
client message with the time it arrived, reports what the engine did, sleeps
until :attr:`RealtimeSession.deadline` and calls :meth:`~RealtimeSession.poll`.
It carries out the returned actions in order:

- :class:`Speak`: synthesize a piece of text for a context, after the
  context's earlier pieces (one context's audio is strictly in order; contexts
  interleave);
- :class:`Stop`: end a context's engine work now (``cancel``, a failure);
- :class:`SendJSON`: a ``done`` or ``error`` message;
- :class:`Close`: close the socket with a WebSocket close code.

Audio goes through :meth:`RealtimeSession.audio`, which frames it
(:mod:`.framing`) and counts it, or drops it when its context was cancelled
meanwhile, so nothing of a cancelled context is sent after the cancel.

Text becomes pieces with the same :class:`~orpheus_trio.text.chunker.SentenceChunker`
that ``stream_text`` uses; ``flush`` cuts what is buffered at once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...text.chunker import SentenceChunker
from ..engine import SAMPLING_PARAMS, InvalidParam, shown_value
from .framing import encode_audio

__all__ = [
    "Action",
    "Close",
    "Limits",
    "RealtimeSession",
    "SendJSON",
    "Speak",
    "Stop",
]

#: ``context_id``: short, printable, safe to echo in logs and in the binary frame header.
_CONTEXT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_TEXT_KEYS = frozenset({"type", "context_id", "text", "voice", "continue", "flush"})
_CONTROL_KEYS = frozenset({"type", "context_id"})

#: Close codes (RFC 6455 §7.4.1): normal, protocol error, too big, policy, internal.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


@dataclass(frozen=True)
class Limits:
    """What one socket may ask for."""

    #: Largest client message (bytes of JSON); past it the socket closes with 1009.
    max_message_bytes: int = 64 * 1024
    #: Contexts open at once on one socket; past it an ``overloaded`` error for the new one.
    max_contexts: int = 8
    #: Characters of text one context may receive in all (the v1 ``max_text_chars``).
    max_text_chars: int = 8000
    #: No client message and nothing being spoken for this long: the socket closes (1000).
    idle_timeout_s: float = 60.0
    #: Client messages that are errors in a row before the socket closes (1008): a
    #: client stuck in a loop is not answered forever.
    max_errors: int = 32


@dataclass(frozen=True, slots=True)
class Speak:
    context_id: str
    text: str
    voice: str | None
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Stop:
    context_id: str


@dataclass(frozen=True, slots=True)
class SendJSON:
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Action = Speak | Stop | SendJSON | Close


@dataclass(eq=False)
class _Context:
    voice: str | None
    params: dict[str, Any]
    chunker: SentenceChunker
    text_chars: int = 0
    pieces_queued: int = 0
    pieces_done: int = 0
    chunks: int = 0
    samples: int = 0
    #: No more text will come: ``done`` once every queued piece is spoken.
    input_ended: bool = False


class _MessageError(Exception):
    def __init__(self, code: str, message: str, context_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.context_id = context_id


@dataclass(eq=False)
class RealtimeSession:
    """The state of one socket (see the module docstring)."""

    #: The engine's ``validate``: checks the voice and parameters, raises InvalidParam.
    validate: Callable[[str | None, dict[str, Any]], dict[str, Any]]
    limits: Limits = field(default_factory=Limits)
    #: Builds each context's chunker (tests pass one with exact waits).
    new_chunker: Callable[[], SentenceChunker] = SentenceChunker
    _contexts: dict[str, _Context] = field(default_factory=dict)
    _last_activity: float = 0.0
    _errors_in_row: int = 0
    closed: bool = False
    #: The server is shutting down: no new context; the socket closes (1001) once none is open.
    draining: bool = False

    def start(self, now: float) -> None:
        """The socket is open at ``now`` (the idle timer starts)."""
        self._last_activity = now

    @property
    def open_contexts(self) -> int:
        return len(self._contexts)

    @property
    def deadline(self) -> float | None:
        """When :meth:`poll` has something to do if no event comes first."""
        times = [c.chunker.deadline for c in self._contexts.values()]
        soonest = min((t for t in times if t is not None), default=math.inf)
        if not self._contexts and not self.closed:
            soonest = min(soonest, self._last_activity + self.limits.idle_timeout_s)
        return None if math.isinf(soonest) else soonest

    # -- events in ----------------------------------------------------------

    def receive_message(self, data: str | bytes, now: float) -> list[Action]:
        """A whole client message (text or binary frame) arrived at ``now``."""
        if self.closed:
            return []
        self._last_activity = now
        if len(data) > self.limits.max_message_bytes:
            return self._close(CLOSE_TOO_BIG, "message too big")
        try:
            actions = self._handle(_parse(data), now)
        except _MessageError as error:
            self._errors_in_row += 1
            actions = [SendJSON(_error(error.code, error.message, error.context_id))]
            if error.context_id in self._contexts and error.code != "not_found":
                actions += self._fail(error.context_id)
            if self._errors_in_row >= self.limits.max_errors:
                actions += self._close(CLOSE_POLICY, "too many bad messages")
            return actions
        self._errors_in_row = 0
        return actions

    def poll(self, now: float) -> list[Action]:
        """Time has passed: chunker waits that ran out, the idle timeout."""
        if self.closed:
            return []
        actions: list[Action] = []
        for context_id, context in self._contexts.items():
            actions += self._speak(context_id, context, context.chunker.poll(now))
        if not self._contexts and now >= self._last_activity + self.limits.idle_timeout_s:
            actions += self._close(CLOSE_NORMAL, "idle")
        return actions + self._closed_by_drain()

    def audio(self, context_id: str, pcm: bytes) -> bytes | None:
        """The binary message for ``pcm`` of ``context_id``; ``None``: drop it (cancelled)."""
        context = self._contexts.get(context_id)
        if context is None or self.closed or not pcm:
            return None
        context.chunks += 1
        context.samples += len(pcm) // 2
        return encode_audio(context_id, pcm)

    def piece_done(self, context_id: str, now: float) -> list[Action]:
        """The engine finished one piece of ``context_id`` (in order)."""
        context = self._contexts.get(context_id)
        if context is None:
            return []
        context.pieces_done += 1
        self._last_activity = now
        return self._maybe_done(context_id, context) + self._closed_by_drain()

    def piece_failed(self, context_id: str, code: str, message: str, now: float) -> list[Action]:
        """The engine failed on a piece of ``context_id``: an error for it, the socket lives on."""
        if context_id not in self._contexts:
            return []
        self._last_activity = now
        actions = [SendJSON(_error(code, message, context_id)), *self._fail(context_id)]
        return actions + self._closed_by_drain()

    def close_all(self) -> list[Action]:
        """The socket is going away: stop every context."""
        self.closed = True
        actions: list[Action] = [Stop(c) for c in self._contexts]
        self._contexts.clear()
        return actions

    # -- messages -----------------------------------------------------------

    def _handle(self, message: dict[str, Any], now: float) -> list[Action]:
        kind = message.get("type", "text")
        context_id = message.get("context_id")
        if not isinstance(context_id, str) or not _CONTEXT_ID.fullmatch(context_id):
            raise _MessageError(
                "invalid_request",
                "context_id must be 1-64 characters of A-Z a-z 0-9 . _ : -",
            )
        if kind == "text":
            _only(message, _TEXT_KEYS | SAMPLING_PARAMS, context_id)
            return self._text(context_id, message, now)
        if kind not in ("flush", "close_context", "cancel"):
            raise _MessageError(
                "invalid_request",
                f"unknown message type {shown_value(kind)}; "
                "expected text, flush, close_context or cancel",
                context_id,
            )
        _only(message, _CONTROL_KEYS, context_id)
        context = self._contexts.get(context_id)
        if context is None:
            raise _MessageError("not_found", f"no open context {context_id!r}", context_id)
        if kind == "cancel":
            return self._cancel(context_id, context)
        if kind == "flush":
            return self._flush(context_id, context, now)
        context.input_ended = True
        return self._speak(context_id, context, context.chunker.finish(now))

    def _text(self, context_id: str, message: dict[str, Any], now: float) -> list[Action]:
        text = message.get("text", "")
        if not isinstance(text, str):
            raise _MessageError("invalid_request", "text must be a string", context_id)
        more = message.get("continue", False)
        flush = message.get("flush", False)
        if not isinstance(more, bool) or not isinstance(flush, bool):
            raise _MessageError(
                "invalid_request", "continue and flush must be true or false", context_id
            )
        context = self._contexts.get(context_id)
        actions: list[Action] = []
        if context is None:
            context = self._open(context_id, message)
        elif "voice" in message or SAMPLING_PARAMS & message.keys():
            raise _MessageError(
                "invalid_request",
                "voice and sampling parameters are set by a context's first message",
                context_id,
            )
        if context.input_ended:
            raise _MessageError(
                "invalid_request", f"context {context_id!r} takes no more text", context_id
            )
        context.text_chars += len(text)
        if context.text_chars > self.limits.max_text_chars:
            raise _MessageError(
                "text_too_long",
                f"a context takes at most {self.limits.max_text_chars} characters",
                context_id,
            )
        pieces = context.chunker.feed(text, now)
        if not more:
            context.input_ended = True
            pieces += context.chunker.finish(now)
        actions += self._speak(context_id, context, pieces)
        if flush and more:
            actions += self._flush(context_id, context, now)
        return actions

    def _open(self, context_id: str, message: dict[str, Any]) -> _Context:
        if self.draining:
            raise _MessageError("draining", "the server is shutting down", context_id)
        if len(self._contexts) >= self.limits.max_contexts:
            raise _MessageError(
                "overloaded",
                f"a socket holds at most {self.limits.max_contexts} open contexts",
                context_id,
            )
        voice = message.get("voice")
        if voice is not None and not isinstance(voice, str):
            raise _MessageError("invalid_param", "voice must be a string", context_id)
        params = {k: v for k, v in message.items() if k in SAMPLING_PARAMS}
        try:
            checked = self.validate(voice, params)
        except InvalidParam as error:
            raise _MessageError(
                "invalid_param", f"{error.key}: {error.message}", context_id
            ) from None
        context = _Context(voice, checked, self.new_chunker())
        self._contexts[context_id] = context
        return context

    def _flush(self, context_id: str, context: _Context, now: float) -> list[Action]:
        """Speak what is buffered now; the context stays open for more text."""
        pieces = context.chunker.finish(now)
        context.chunker = self.new_chunker()
        return self._speak(context_id, context, pieces)

    def _cancel(self, context_id: str, context: _Context) -> list[Action]:
        del self._contexts[context_id]
        done = _done(context_id, context, cancelled=True)
        return [Stop(context_id), SendJSON(done)]

    # -- helpers ------------------------------------------------------------

    def _speak(self, context_id: str, context: _Context, pieces: list[str]) -> list[Action]:
        actions: list[Action] = []
        for piece in pieces:
            context.pieces_queued += 1
            actions.append(Speak(context_id, piece, context.voice, context.params))
        return actions + self._maybe_done(context_id, context)

    def _maybe_done(self, context_id: str, context: _Context) -> list[Action]:
        if not context.input_ended or context.pieces_done < context.pieces_queued:
            return []
        del self._contexts[context_id]
        return [SendJSON(_done(context_id, context, cancelled=False))]

    def _fail(self, context_id: str) -> list[Action]:
        del self._contexts[context_id]
        return [Stop(context_id)]

    def _closed_by_drain(self) -> list[Action]:
        if self.draining and not self._contexts and not self.closed:
            return self._close(CLOSE_GOING_AWAY, "server shutting down")
        return []

    def _close(self, code: int, reason: str) -> list[Action]:
        return [*self.close_all(), Close(code, reason)]


def _parse(data: str | bytes) -> dict[str, Any]:
    if isinstance(data, bytes):
        raise _MessageError("invalid_request", "messages are JSON text frames, not binary")
    try:
        message = json.loads(data)
    except ValueError as error:
        raise _MessageError("invalid_request", f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise _MessageError("invalid_request", "a message is a JSON object")
    return message


def _only(message: dict[str, Any], known: frozenset[str], context_id: str) -> None:
    unknown = sorted(set(message) - known)
    if unknown:
        raise _MessageError(
            "invalid_request",
            f"unknown field {shown_value(unknown[0])} for a {message.get('type', 'text')} message",
            context_id,
        )


def _done(context_id: str, context: _Context, *, cancelled: bool) -> dict[str, Any]:
    done: dict[str, Any] = {
        "type": "done",
        "context_id": context_id,
        "chunks": context.chunks,
        "samples": context.samples,
    }
    if cancelled:
        done["cancelled"] = True
    return done


def _error(code: str, message: str, context_id: str | None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if context_id is not None:
        error["context_id"] = context_id
    return error
