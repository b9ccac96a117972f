"""The engine interface: what the server needs from anything that makes speech.

The server (``synthesis.py`` runs an engine) knows nothing about how audio is made. An engine has a
name, a list of voices, validates the request's engine parameters, and turns
text + voice + parameters into an async generator of :data:`Piece` values.
The local Orpheus LLM engine and the gateway (which forwards to upstream
workers) implement the same interface.

What an engine's generator may yield:

- ``bytes``: PCM, s16le mono 24 kHz, an even number of bytes (``b""`` is skipped).
  Each piece becomes one ``chunk`` frame.
- :class:`Hints`: routing hints, sent as a ``metrics`` frame (a gateway
  forwards its upstream's hints this way).
- :class:`ChunkLines`: ``chunk`` lines already encoded and checked, written
  as they are (a gateway relays its worker's lines this way, without decoding
  the audio). They must continue the stream's ``seq`` numbering.
- :class:`RawLine`: bytes written to the body verbatim. Only for fault
  injection (a malformed line); real engines never need it.

How an engine fails:

- raise :class:`EngineError` (``code``, ``message``, optional HTTP ``status``).
  Before the first piece, an error *with* a status becomes that non-2xx answer
  with the JSON error body (a gateway passes an upstream 429/503 on this way);
  otherwise it ends the stream with an in-band ``error`` frame.
- raise :class:`AbortStream`: the server drops the connection mid-body, with
  no ``eos`` and no ``error`` frame (what a crashed worker looks like).
- any other exception is a bug: in-band ``internal`` (or a 500 before streaming).

Cancellation: the server cancels the generator (client gone, deadline, shutdown)
and then closes it; engines must stop their work promptly when cancelled.

The request: while the server runs one, :data:`CURRENT_REQUEST` holds its
``X-Request-Id`` (the caller's, or one the server made up), so an engine that
forwards upstream can name its own requests after it, and the fields the
engine wants on the request's access-log line (which upstream served it).

Deadlines: the server validates ``timeout_s`` itself and passes the capped
value in ``params`` (engines may forward it upstream). The value ``validate``
returns under ``timeout_s`` is the deadline the server enforces; returning
``None`` there turns enforcement off for that request (the synthetic engine's
``overrun`` fault, which simulates a server that ignores deadlines).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "CURRENT_REQUEST",
    "SAMPLING_PARAMS",
    "AbortStream",
    "ChunkLines",
    "Engine",
    "EngineError",
    "Hints",
    "InvalidParam",
    "Piece",
    "RawLine",
    "RequestContext",
    "require_bool",
    "require_int",
    "require_number",
    "shown_value",
    "unknown_param",
    "validate_sampling_param",
]


@dataclass(frozen=True, slots=True)
class Hints:
    """Routing hints for a ``metrics`` frame (``queue_depth``, ``rtf``, ...)."""

    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChunkLines:
    """``chunks`` whole, valid ``chunk`` lines holding ``samples`` samples in all,
    numbered on from the stream's chunks so far (see the module docstring)."""

    data: bytes
    chunks: int
    samples: int


@dataclass(frozen=True, slots=True)
class RawLine:
    """Bytes written to the response body as they are (fault injection only)."""

    data: bytes


Piece = bytes | Hints | ChunkLines | RawLine


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request being served: its id, and fields for its access-log line."""

    request_id: str
    log_fields: dict[str, Any]


#: Set by the server in each request's task (``None`` outside a request).
CURRENT_REQUEST: ContextVar[RequestContext | None] = ContextVar(
    "orpheus_current_request", default=None
)


class InvalidParam(ValueError):
    """A request parameter has a bad type or value, or the engine does not know it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


class EngineError(Exception):
    """Synthesis failed. ``status`` (if set) is used when nothing was streamed yet;
    ``param`` names the offending parameter in that answer (a gateway passes a
    worker's on)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        param: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.param = param
        super().__init__(f"{code}: {message}")


class AbortStream(Exception):
    """Ask the server to cut the connection mid-stream, without a closing frame."""


class Engine(Protocol):
    """Makes speech for the server. See the module docstring for the contract."""

    name: str

    def voices(self) -> list[str]:
        """Voice names this engine accepts (``None`` picks its default)."""
        ...

    def validate(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        """Check voice and parameters; return normalised parameters or raise InvalidParam."""
        ...

    # Optional: ``emotion_tags() -> list[str]``, the inline tags (``<laugh>``) the engine
    # performs rather than reads out; see :func:`emotion_tags`. Without it an engine
    # claims none.

    def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        """Stream the audio for ``text``; ``params`` is what ``validate`` returned."""
        ...

    async def aclose(self) -> None:
        """Release what the engine holds (threads, models, connections)."""
        ...


def shown_value(value: Any) -> str:
    """``repr(value)`` for an error message, cut short (a huge number says how long it is)."""
    try:
        shown = repr(value)
    except ValueError:  # past Python's digit limit for int to str
        return "an integer with too many digits"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"an integer of {len(shown.lstrip('-'))} digits"
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


#: The inline tags the Orpheus finetuned voices were trained to perform (the model card's list).
ORPHEUS_EMOTION_TAGS: tuple[str, ...] = (
    "<laugh>", "<chuckle>", "<sigh>", "<cough>", "<sniffle>", "<groan>", "<yawn>", "<gasp>",
)  # fmt: skip


def emotion_tags(engine: Engine) -> list[str]:
    """The emotion tags ``engine`` supports, as ``/v1/system`` lists them (none unless it says)."""
    method = getattr(engine, "emotion_tags", None)
    if method is None:
        return []
    tags = method()
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise TypeError(f"{type(engine).__name__}.emotion_tags() must return a list of str")
    return list(tags)


def require_number(key: str, value: Any, *, low: float, high: float) -> float:
    """A real number (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParam(key, f"must be a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidParam(
            key, f"must be between {low:g} and {high:g}, got {shown_value(value)}"
        )
    return float(value)


def require_int(key: str, value: Any, *, low: int, high: int) -> int:
    """An integer (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParam(key, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidParam(
            key, f"must be between {low} and {high}, got {shown_value(value)}"
        )
    return value


def require_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidParam(key, f"must be true or false, got {type(value).__name__}")
    return value


#: Orpheus sampling parameters every client may send. Engines without sampling
#: (espeak, synthetic) check them and ignore them, so one client works everywhere.
SAMPLING_PARAMS = frozenset(
    {"temperature", "top_p", "top_k", "max_tokens", "repetition_penalty"}
)


def unknown_param(key: str, known: Iterable[str]) -> InvalidParam:
    """The error for a parameter the engine does not take, naming those it does."""
    return InvalidParam(
        key, f"unknown parameter; this engine takes: {', '.join(sorted(known))}"
    )


def validate_sampling_param(key: str, value: Any) -> float | int:
    """Type- and range-check one of :data:`SAMPLING_PARAMS`."""
    if key == "temperature":
        return require_number(key, value, low=0.0, high=2.0)
    if key == "top_p":
        return require_number(key, value, low=0.0, high=1.0)
    if key == "top_k":
        return require_int(key, value, low=0, high=100_000)
    if key == "max_tokens":
        return require_int(key, value, low=1, high=1_000_000)
    if key == "repetition_penalty":
        return require_number(key, value, low=0.5, high=3.0)
    raise InvalidParam(key, "unknown parameter")
