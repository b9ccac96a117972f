"""One decoder, many streams: gather windows for a few ms, decode them in one batch.

A Trio task collects decode requests from every stream until ``max_batch``
have arrived, or as many as the previous batch held, or ``max_wait_ms`` has
passed since the first (so a lone stream waits for company once, not at
every window, and a busy service still fills its batches), groups them by
window shape (a batch needs equal lengths; in steady state every stream's
windows have the same shape), runs each group as one batched decode in a
worker thread, and hands each stream its own samples back. Batching changes
nothing in the audio: each window's output equals decoding it alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt
import anyio
import anyio.to_thread
import trio  # BackgroundBatchingDecoder only: server engines run on Trio
import trio.lowlevel

from .snac_decoder import SnacDecoder
from .stream_decode import Audio, DecodeWindow

__all__ = ["CPU_BATCH_LATENTS", "BackgroundBatchingDecoder", "BatchingDecoder"]

#: Default cap on the latent steps (windows x length) of one decode call on CPU.
CPU_BATCH_LATENTS = 96
#: BatchingDecoder's defaults, shared with BackgroundBatchingDecoder, which builds one per run.
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_WAIT_MS = 2.0


@dataclass(eq=False)
class _Request:
    window: DecodeWindow
    done: anyio.Event = field(default_factory=anyio.Event)
    audio: Audio | None = None
    error: BaseException | None = None
    #: The stream stopped waiting (cancelled): nobody wants this window any more.
    abandoned: bool = False

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class BatchingDecoder:
    """Trio service batching :class:`DecodeWindow` decodes across streams.

    ``max_batch`` caps the windows gathered at once; ``max_batch_latents``
    caps one decode call's windows x latent steps (default: no cap on CUDA,
    :data:`CPU_BATCH_LATENTS` on CPU, where bigger calls only spill caches).
    ``async with BatchingDecoder(decoder) as batcher:`` then, from any task,
    ``audio = await batcher.decode_window(window)`` (or pass ``batcher`` to
    :func:`~orpheus_trio.local.stream_decode.pcm_from_tokens`).
    """

    def __init__(
        self,
        decoder: SnacDecoder,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_batch_latents: int | None = None,
    ) -> None:
        on_cuda = decoder.device.type == "cuda"
        if max_batch_latents is None:
            # On a CPU the cost per latent step is flat up to ~100 steps per
            # call, then grows steeply as activations spill the caches; a GPU
            # wants as many windows at once as it can get.
            max_batch_latents = 1 << 30 if on_cuda else CPU_BATCH_LATENTS
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_batch_latents < 1:
            raise ValueError(f"max_batch_latents must be >= 1, got {max_batch_latents}")
        self.max_batch_latents = max_batch_latents
        if not (max_wait_ms >= 0 and math.isfinite(max_wait_ms)):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms}")
        self._decoder = decoder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.batches_run = 0
        self.windows_decoded = 0
        self._send, self._receive = anyio.create_memory_object_stream[_Request](math.inf)
        self._stack: AsyncExitStack | None = None

    @property
    def decoder(self) -> SnacDecoder:
        return self._decoder

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("BatchingDecoder is already running")
        async with AsyncExitStack() as stack:
            tasks = await stack.enter_async_context(anyio.create_task_group())
            tasks.start_soon(self._serve)
            stack.callback(tasks.cancel_scope.cancel)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None
        try:
            return await stack.__aexit__(exc_type, exc, tb)
        finally:
            # Streams still waiting (outside this block's tasks) must not wait forever.
            while True:
                try:
                    self._receive.receive_nowait().fail(_closed_error())
                except anyio.WouldBlock:
                    break

    async def decode_window(self, window: DecodeWindow) -> Audio:
        """The new samples of ``window`` (its kept centre), decoded in some batch."""
        if self._stack is None:
            raise RuntimeError("use BatchingDecoder inside 'async with'")
        request = _Request(window)
        self._send.send_nowait(request)
        try:
            await request.done.wait()
        except BaseException:
            request.abandoned = True  # a batch not yet run skips it
            raise
        if request.error is not None:
            raise request.error
        assert request.audio is not None
        return request.audio

    async def _serve(self) -> None:
        batch: list[_Request] = []
        try:
            await self._serve_batches(batch)
        finally:
            for request in batch:  # closed while these were gathered or decoding
                request.fail(_closed_error())

    async def _serve_batches(self, batch: list[_Request]) -> None:
        expected = self.max_batch  # no history yet: wait for a full batch (or max_wait)
        while True:
            batch[:] = [await self._receive.receive()]
            with anyio.move_on_after(self.max_wait_s):
                while len(batch) < expected:
                    batch.append(await self._receive.receive())
            # Whatever else is queued rides along too.
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except anyio.WouldBlock:
                    break
            expected = len(batch)
            groups: dict[tuple[int, int, int], list[_Request]] = {}
            for request in batch:
                if not request.abandoned:
                    groups.setdefault(request.window.shape_key, []).append(request)
            for group in groups.values():
                window = group[0].window
                per_call = max(1, self.max_batch_latents // (window.latent_stop - window.latent_start))
                for first in range(0, len(group), per_call):
                    await self._run(group[first : first + per_call])

    async def _run(self, group: list[_Request]) -> None:
        first = group[0].window
        frames: npt.NDArray[np.int64] = np.stack([r.window.frames for r in group])
        try:
            audio = await anyio.to_thread.run_sync(
                self._decoder.decode_batch, frames, first.latent_start, first.latent_stop
            )
        except Exception as exc:  # noqa: BLE001 - every waiting stream gets the decode's error
            for request in group:
                request.fail(exc)
            return
        self.batches_run += 1
        self.windows_decoded += len(group)
        for request, row in zip(group, audio, strict=True):
            request.audio = request.window.keep(row)
            request.done.set()


def _closed_error() -> RuntimeError:
    return RuntimeError("the BatchingDecoder was closed before this window was decoded")


class BackgroundBatchingDecoder:
    """A :class:`BatchingDecoder` for code that cannot hold ``async with`` around
    all its streams (a server engine, built before ``trio.run``).

    The batcher starts on the first :meth:`decode_window` of each Trio run, as
    a system task, and stops with the run or at :meth:`aclose`. ``options`` are
    :class:`BatchingDecoder`'s. Streams of one run share one batcher.
    """

    def __init__(
        self,
        decoder: SnacDecoder,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_batch_latents: int | None = None,
    ) -> None:
        self._make: Callable[[], BatchingDecoder] = functools.partial(
            BatchingDecoder,
            decoder,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_batch_latents=max_batch_latents,
        )
        self._make()  # bad options raise now, not at the first request
        self._decoder = decoder
        self._run: object | None = None  # the Trio run the batcher belongs to
        self._started: trio.Event | None = None
        self._stop: trio.Event | None = None
        self.current: BatchingDecoder | None = None

    @property
    def decoder(self) -> SnacDecoder:
        return self._decoder

    async def decode_window(self, window: DecodeWindow) -> Audio:
        """As :meth:`BatchingDecoder.decode_window`, starting the batcher if needed."""
        run = trio.lowlevel.current_trio_token()
        if self._run is not run or self._started is None:
            self._run = run
            self._start()
        assert self._started is not None
        await self._started.wait()
        assert self.current is not None
        return await self.current.decode_window(window)

    def _start(self) -> None:
        started, stop = trio.Event(), trio.Event()
        self._started, self._stop, self.current = started, stop, None
        batcher = self._make()

        async def serve() -> None:
            async with batcher:
                self.current = batcher
                started.set()
                await stop.wait()

        trio.lowlevel.spawn_system_task(serve, name="orpheus-snac-batcher")

    async def aclose(self) -> None:
        """Stop this run's batcher (a later decode starts a new one)."""
        if self._stop is not None and self._run is trio.lowlevel.current_trio_token():
            self._stop.set()
        self._run = None
        await trio.lowlevel.checkpoint()
