"""A deterministic, scriptable engine for tests and benchmarks.

The PCM of chunk ``seq`` is a pure function of ``(text, voice, seq,
chunk_samples, seed)``: a slice of a fixed noise table at an offset hashed from
those values. :func:`expected_pcm` / :func:`expected_stream` recompute it, so a
test can check every byte it received. Making a chunk costs one slice, so a
benchmark at full speed measures the server, not the engine.

Request parameters (all optional; sampling parameters are checked and ignored):

==================  =========================================================
``chunk_samples``   samples per chunk (default 2048, 1..480000)
``chunks``          number of chunks; default: ``ceil(len(text) * 1200 /
                    chunk_samples)`` (50 ms of audio per character)
``seed``            changes the audio (int, default 0)
``ttfb_ms``         delay before the first chunk (default 0)
``rtf``             pacing: each chunk takes ``rtf`` x its audio duration;
                    0 = as fast as possible (default 0)
``fail_status``     fail before the first chunk with this HTTP status (400..599)
``fail_code``       error code for ``fail_status`` (default per status)
``retry_after_s``   Retry-After sent with ``fail_status`` 429/503
``stall_s``         sleep this long after ``stall_after`` chunks (default after 0)
``stall_after``     see ``stall_s``
``cut_after``       cut the TCP connection after this many chunks (no eos)
``malformed_after`` write a line that is not JSON after this many chunks
``error_after``     end with an in-band error frame after this many chunks
``error_code``      code of that error frame (default ``engine_error``)
``overrun``         true: the server does not enforce the deadline
==================  =========================================================

Per-server scripting: ``SyntheticEngine(defaults=..., faults=[...])``.
``defaults`` apply to every request (request parameters win); each
:class:`ScheduledFault` overrides parameters for every Nth request or for a
seeded fraction of requests, counted in arrival order (not by text, so a
hedged duplicate of a slow request is not slow too).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from ...audio.pcm import SAMPLE_RATE
from ...voices import VoiceCatalog, catalog_for
from ..engine import (
    SAMPLING_PARAMS,
    AbortStream,
    EngineError,
    InvalidParam,
    Piece,
    RawLine,
    require_bool,
    require_int,
    require_number,
    shown_value,
    unknown_param,
    validate_sampling_param,
)

__all__ = [
    "SAMPLE_RATE",
    "VOICES",
    "ScheduledFault",
    "SyntheticEngine",
    "chunk_count",
    "expected_pcm",
    "expected_stream",
]

VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
DEFAULT_VOICE = "tara"
DEFAULT_CHUNK_SAMPLES = 2048
SAMPLES_PER_CHAR = 1200
MAX_CHUNK_SAMPLES = 480_000
MALFORMED_LINE = b'{"type": "chunk", "seq": not-json\n'
#: Every parameter ``validate`` takes (named in the error for any other).
_PARAMS = SAMPLING_PARAMS | {
    "timeout_s", "chunk_samples", "chunks", "stall_after", "cut_after",
    "malformed_after", "error_after", "seed", "ttfb_ms", "rtf", "stall_s",
    "retry_after_s", "fail_status", "fail_code", "error_code", "overrun",
}  # fmt: skip

_DEFAULT_FAIL_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    413: "text_too_long",
    429: "overloaded",
    503: "unavailable",
}

# A fixed table of quiet noise; chunks are slices of it (a byte view, no math per chunk).
_TABLE_SAMPLES = 1 << 20
_TABLE = (
    np.random.default_rng(20240601)
    .integers(-6000, 6000, size=_TABLE_SAMPLES + MAX_CHUNK_SAMPLES, dtype=np.int16)
    .tobytes()
)


def chunk_count(text: str, params: Mapping[str, Any]) -> int:
    """How many chunks a request with these (validated) parameters streams."""
    chunk_samples = int(params.get("chunk_samples", DEFAULT_CHUNK_SAMPLES))
    chunks = params.get("chunks")
    if chunks is not None:
        return int(chunks)
    return max(1, math.ceil(len(text) * SAMPLES_PER_CHAR / chunk_samples))


def expected_pcm(
    text: str, voice: str | None, seq: int, params: Mapping[str, Any]
) -> bytes:
    """The exact PCM bytes of chunk ``seq`` (uses ``chunk_samples`` and ``seed``)."""
    chunk_samples = int(params.get("chunk_samples", DEFAULT_CHUNK_SAMPLES))
    seed = int(params.get("seed", 0))
    key = f"{voice or DEFAULT_VOICE}\x00{seed}\x00{seq}\x00{chunk_samples}\x00{text}"
    offset = zlib.crc32(key.encode()) % _TABLE_SAMPLES
    return _TABLE[2 * offset : 2 * (offset + chunk_samples)]


def expected_stream(
    text: str, voice: str | None, params: Mapping[str, Any]
) -> list[bytes]:
    """Every chunk's PCM, in order, for a request that ends normally."""
    return [
        expected_pcm(text, voice, seq, params)
        for seq in range(chunk_count(text, params))
    ]


def _raise_scripted_end(sent: int, p: Mapping[str, Any]) -> None:
    """Raise the cut or the error frame the request scripted after ``sent`` chunks, if any."""
    if sent == p.get("cut_after"):
        raise AbortStream(f"scripted cut after {sent} chunks")
    if sent == p.get("error_after"):
        raise EngineError(
            p.get("error_code", "engine_error"),
            f"scripted error after {sent} chunks",
        )


@dataclass(frozen=True)
class ScheduledFault:
    """Override ``params`` on every ``every``-th request, or on a ``fraction`` of them.

    Selection is deterministic: request ``n`` (counted from 0) is hit when
    ``(n + 1) % every == 0``, or when a hash of ``(seed, n)`` falls below ``fraction``.
    Faults are picked when synthesis starts, after the deadline is set, so
    ``overrun`` belongs in request parameters or ``defaults``, not here.
    """

    params: Mapping[str, Any]
    every: int | None = None
    fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.every is None) == (self.fraction is None):
            raise ValueError("give exactly one of every= or fraction=")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be >= 1")
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")

    def hits(self, request_index: int) -> bool:
        if self.every is not None:
            return (request_index + 1) % self.every == 0
        assert self.fraction is not None
        draw = zlib.crc32(f"{self.seed}:{request_index}".encode()) / 0xFFFFFFFF
        return draw < self.fraction


@dataclass
class SyntheticEngine:
    """Deterministic audio with scriptable timing and faults (see the module docstring)."""

    defaults: Mapping[str, Any] = field(default_factory=dict)
    faults: Sequence[ScheduledFault] = ()
    name: str = "synthetic"
    #: The voices offered (the English fine-tune's by default; any family's for tests
    #: of languages and routing). Its aliases are resolved by the server.
    voice_catalog: VoiceCatalog = field(default_factory=lambda: catalog_for("en-ft"))
    #: Requests begun, in arrival order (scheduled faults count these).
    requests_started: int = field(default=0, init=False)
    #: Requests whose synthesis was cancelled (client gone, deadline): tests check it.
    requests_cancelled: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        # Fail at construction, not on the first request.
        self._check(None, dict(self.defaults))
        for fault in self.faults:
            self._check(None, dict(fault.params))

    def voices(self) -> list[str]:
        return self.voice_catalog.names()

    def catalog(self) -> VoiceCatalog:
        return self.voice_catalog

    def validate(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        checked = self._check(voice, params)
        merged = {**self.defaults, **checked}
        if merged.get("overrun"):
            merged["timeout_s"] = None
        return merged

    def _check(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        if voice is not None and voice not in self.voice_catalog:
            raise InvalidParam(
                "voice",
                f"unknown voice {shown_value(voice)}; valid: {', '.join(self.voice_catalog)}",
            )
        out: dict[str, Any] = {}
        for key, value in params.items():
            out[key] = self._check_param(key, value)
        return out

    @staticmethod
    def _check_param(key: str, value: Any) -> Any:  # keep _PARAMS in step
        if key in SAMPLING_PARAMS:
            return validate_sampling_param(key, value)
        if key == "timeout_s":
            return value  # validated by the server
        if key == "chunk_samples":
            return require_int(key, value, low=1, high=MAX_CHUNK_SAMPLES)
        if key in (
            "chunks",
            "stall_after",
            "cut_after",
            "malformed_after",
            "error_after",
        ):
            return require_int(key, value, low=0, high=10_000_000)
        if key == "seed":
            return require_int(key, value, low=-(2**63), high=2**63 - 1)
        if key == "ttfb_ms":
            return require_number(key, value, low=0.0, high=3_600_000.0)
        if key in ("rtf",):
            return require_number(key, value, low=0.0, high=1000.0)
        if key in ("stall_s", "retry_after_s"):
            return require_number(key, value, low=0.0, high=3600.0)
        if key == "fail_status":
            return require_int(key, value, low=400, high=599)
        if key in ("fail_code", "error_code"):
            if not isinstance(value, str) or not value:
                raise InvalidParam(key, "must be a non-empty string")
            return value
        if key == "overrun":
            return require_bool(key, value)
        raise unknown_param(key, _PARAMS)

    def _effective(self, params: dict[str, Any]) -> dict[str, Any]:
        index = self.requests_started
        self.requests_started += 1
        effective = dict(params)
        for fault in self.faults:
            if fault.hits(index):
                effective.update(fault.params)
        return effective

    def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        # Scheduled faults are picked here, at call time, in arrival order.
        return self._pieces(text, voice, self._effective(params))

    async def _pieces(
        self, text: str, voice: str | None, p: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        try:
            async for piece in self._script(text, voice, p):
                yield piece
        except trio.Cancelled:
            self.requests_cancelled += (
                1  # tests check that cancellation reached the engine
            )
            raise

    async def _script(
        self, text: str, voice: str | None, p: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        if p.get("ttfb_ms"):
            await trio.sleep(p["ttfb_ms"] / 1000)
        status = p.get("fail_status")
        if status is not None:
            code = p.get("fail_code") or _DEFAULT_FAIL_CODES.get(status, "internal")
            raise EngineError(
                code,
                f"scripted failure ({status})",
                status=status,
                retry_after_s=p.get("retry_after_s"),
            )
        chunk_samples = int(p.get("chunk_samples", DEFAULT_CHUNK_SAMPLES))
        pace_s = float(p.get("rtf", 0.0)) * chunk_samples / SAMPLE_RATE
        stall_after = p.get("stall_after", 0) if "stall_s" in p else None
        for seq in range(chunk_count(text, p)):
            if seq == stall_after:
                await trio.sleep(p["stall_s"])
            _raise_scripted_end(seq, p)
            if seq == p.get("malformed_after"):
                yield RawLine(MALFORMED_LINE)
            if pace_s > 0 and seq > 0:
                await trio.sleep(pace_s)
            else:
                await trio.lowlevel.checkpoint()
            yield expected_pcm(text, voice, seq, p)
        # Faults placed exactly at the end still fire (e.g. cut_after == chunks).
        _raise_scripted_end(chunk_count(text, p), p)

    async def aclose(self) -> None:
        return None
