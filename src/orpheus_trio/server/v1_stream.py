"""Writing one v1 answer: the 200 head, then NDJSON frames (docs/protocol.md).

The head waits for the engine's first piece, so an engine that fails before
any audio can still get a real non-2xx answer, and it goes out together with
the opening ``metrics`` frame (queue depth, inflight, capacity). Every stream
ends with ``eos`` after a closing ``metrics`` frame, or with an ``error`` frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..audio.pcm import SAMPLE_RATE
from ..protocol.frames import encode_chunk, encode_eos, encode_error, encode_metrics
from .engine import ChunkLines, Hints, Piece, RawLine
from .error_codes import error_label
from .exchange import Exchange
from .metrics import ServerMetrics
from .slots import Slots
from .voices_api import voice_header

__all__ = ["StreamWriter"]


class StreamWriter:
    """Frames for any exchange of one server (its slots, metrics and clock)."""

    def __init__(
        self,
        slots: Slots,
        metrics: ServerMetrics,
        capacity: int,
        clock: Callable[[], float],
    ) -> None:
        self._slots = slots
        self._metrics = metrics
        self._capacity = capacity
        self._clock = clock

    async def piece(self, ex: Exchange, piece: Piece) -> None:
        """Write what the engine yielded (see :mod:`.engine` for each kind)."""
        if isinstance(piece, bytes):
            if not piece:
                return
            if len(piece) % 2:
                raise RuntimeError(f"engine produced {len(piece)} bytes (odd)")
            prefix = await self._head(ex)
            self._mark_first_audio(ex)
            await ex.write(prefix + encode_chunk(ex.chunks, piece))
            ex.chunks += 1
            ex.samples += len(piece) // 2
        elif isinstance(piece, ChunkLines):
            if not piece.chunks:
                return
            prefix = await self._head(ex)
            self._mark_first_audio(ex)
            await ex.write(prefix + piece.data)
            ex.chunks += piece.chunks
            ex.samples += piece.samples
        elif isinstance(piece, Hints):
            await ex.write(await self._head(ex) + encode_metrics(**piece.values))
        elif isinstance(piece, RawLine):
            await ex.write(await self._head(ex) + piece.data)

    async def finish(self, ex: Exchange) -> None:
        """The closing ``metrics`` (audio_s, ttfb_ms, rtf) and ``eos`` frames."""
        prefix = await self._head(ex)
        audio_s = ex.samples / SAMPLE_RATE
        elapsed = self._clock() - ex.received_at
        hints: dict[str, Any] = {"audio_s": round(audio_s, 4)}
        if ex.first_audio_at is not None:
            hints["ttfb_ms"] = round((ex.first_audio_at - ex.received_at) * 1000, 2)
        if audio_s > 0:
            hints["rtf"] = round(elapsed / audio_s, 4)
        await ex.write(
            prefix + encode_metrics(**hints) + encode_eos(ex.chunks, ex.samples),
            more=False,
        )

    async def end_with_error(self, ex: Exchange, code: str, message: str) -> None:
        """End the stream with an in-band ``error`` frame (a 200 head first if none went)."""
        prefix = await self._head(ex)
        ex.code = code
        self._metrics.errors.labels(code=error_label(code)).inc()
        await ex.write(prefix + encode_error(code, message), more=False)

    async def start(self, ex: Exchange) -> None:
        """Send the 200 head alone (a stream that is cut before its first frame)."""
        await self._head(ex)

    async def _head(self, ex: Exchange) -> bytes:
        """Send the 200 head unless sent; return the opening metrics frame for the first write."""
        if ex.started:
            return b""
        depth = self._slots.reported_depth(ex.queue_depth or 0)
        headers = [
            (b"content-type", b"application/x-ndjson"),
            (b"cache-control", b"no-store"),
            (b"x-queue-depth", str(depth).encode()),
        ]
        voice = ex.extra.get("voice")  # the one that speaks (see voices_api)
        if voice:
            headers.append(voice_header(voice))
        await ex.start(200, headers)
        admission = self._slots.admission
        return encode_metrics(
            queue_depth=self._slots.reported_depth(admission.queued),
            inflight=admission.running,
            capacity=self._capacity,
            **({"voice": voice} if voice else {}),
        )

    def _mark_first_audio(self, ex: Exchange) -> None:
        if ex.first_audio_at is None:
            ex.first_audio_at = self._clock()
            self._metrics.time_to_first_audio.observe(ex.first_audio_at - ex.received_at)
