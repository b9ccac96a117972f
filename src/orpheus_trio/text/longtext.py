"""Long text as an ordered stream of pieces, with the next piece synthesized while one plays.

Given pieces of text and ``stream_piece(text) -> async iterator of PCM``, each
piece runs as a background task feeding its own bounded memory channel; the
consumer drains the channels strictly in piece order. Prefetch is bounded:
at most ``prefetch`` pieces run ahead of the one being consumed, and a piece is
only requested once the piece before it has produced audio (so the first
piece's time to first audio is not shared with the next request).

The texts are a sequence, or an async iterable read as the pieces are started
(text arriving while earlier pieces play: ``SpeechSource.stream_text``). With
``join_fade_samples`` the joins between pieces are faded (``joins``) so
that they do not click; by default the pieces' audio is butted together as is.

A failing piece raises its own exception (its type unchanged, so ``except``
clauses keep working) with a note naming the piece, after all audio of the
pieces before it; pieces after it are cancelled.

Written on AnyIO, so it runs under Trio and asyncio alike. Neither allows a
``yield`` inside a task group in an async generator, so the tasks need a home
outside the consumer's generator frame. Two front doors:

- :func:`open_ordered_stream`, an async context manager that owns the task
  group (the structured form: use it where you can write ``async with``);
- :func:`ordered_stream`, a plain async iterator for APIs that must be one
  (``OrpheusTTS.stream``): the producer runs as a detached task (a Trio system
  task, or a plain asyncio task) inside a cancel scope that the iterator owns
  and cancels when it ends, is closed, or is garbage collected (both loops
  finalize abandoned async generators).
"""

from __future__ import annotations

import contextvars
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field

import anyio

from .._util.groups import single_exception
from .._util.loops import spawn_detached
from ..audio.joins import JoinSmoother

__all__ = ["Piece", "StreamPiece", "Texts", "open_ordered_stream", "ordered_stream"]

#: Synthesizes one piece of text: an async iterator of PCM chunks.
StreamPiece = Callable[[str], AsyncIterable[bytes]]
#: The pieces' texts: all known up front, or arriving over time.
Texts = Sequence[str] | AsyncIterable[str]

DEFAULT_PREFETCH = 1
#: Chunks a prefetched piece may buffer before its stream is paused (backpressure to the server).
DEFAULT_MAX_BUFFERED_CHUNKS = 512
_PREVIEW_CHARS = 40


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a long text: its 0-based index, how many there are (if known), and its text."""

    index: int
    count: int | None
    text: str

    def describe(self) -> str:
        preview = (
            self.text
            if len(self.text) <= _PREVIEW_CHARS
            else self.text[:_PREVIEW_CHARS] + "..."
        )
        of = "" if self.count is None else f" of {self.count}"
        return f"piece {self.index + 1}{of} ({preview!r})"

    @property
    def is_last(self) -> bool:
        """Known to be the last piece (never, while more texts may still arrive)."""
        return self.count is not None and self.index == self.count - 1


@dataclass(eq=False)
class _Slot:
    """A piece in flight: its audio channel, whether it has started producing, how it ended."""

    piece: Piece
    max_buffered_chunks: int
    started_audio: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None

    def __post_init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[bytes](
            self.max_buffered_chunks
        )


class _Pipeline:
    """The shared state: ``produce`` runs in the background, ``audio`` is the consumer side."""

    def __init__(
        self,
        texts: Texts,
        stream_piece: StreamPiece,
        prefetch: int,
        max_buffered_chunks: int,
        join_fade_samples: int,
    ) -> None:
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if max_buffered_chunks < 1:
            raise ValueError(
                f"max_buffered_chunks must be >= 1, got {max_buffered_chunks}"
            )
        if join_fade_samples < 0:
            raise ValueError(f"join_fade_samples must be >= 0, got {join_fade_samples}")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence or async iterable of str, not one str")
        self._texts = texts
        self._join_fade_samples = join_fade_samples
        self._stream_piece = stream_piece
        self._max_buffered_chunks = max_buffered_chunks
        # One token per piece in flight: the one being consumed plus those prefetched.
        self._in_flight = anyio.Semaphore(prefetch + 1)
        self._order_send, self._order_receive = anyio.create_memory_object_stream[_Slot](
            prefetch + 1
        )
        self._failure: Exception | None = None
        #: Set once every text has been read (so every slot has been sent).
        self._texts_ended = False

    async def produce(self) -> None:
        """Start each piece in order as prefetch allows. Raises nothing but ``Cancelled``."""
        async with self._order_send:
            try:
                async with anyio.create_task_group() as group, aclosing(
                    self._numbered()
                ) as pieces:
                    previous: _Slot | None = None
                    async for piece in pieces:
                        await self._in_flight.acquire()
                        if previous is not None:
                            await previous.started_audio.wait()
                        slot = _Slot(piece, self._max_buffered_chunks)
                        name = f"orpheus {piece.describe()}"
                        group.start_soon(self._run_piece, slot, name=name)
                        await self._order_send.send(slot)
                        previous = slot
            except Exception as exc:  # a bug here must reach the consumer, not crash the run
                self._failure = exc

    async def _numbered(self) -> AsyncGenerator[Piece, None]:
        if not isinstance(self._texts, AsyncIterable):
            for i, text in enumerate(self._texts):
                yield Piece(i, len(self._texts), text)
            self._texts_ended = True
            return
        texts = aiter(self._texts)
        try:
            index = 0
            async for text in texts:
                if not isinstance(text, str):
                    raise TypeError(f"texts must be str, got {type(text).__name__}")
                yield Piece(index, None, text)
                index += 1
        except Exception as exc:
            # The pieces already started still play; the consumer raises this after them.
            exc.add_note(f"while reading the texts (after {index} pieces)")
            self._failure = exc
        finally:
            self._texts_ended = True
            aclose = getattr(texts, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _run_piece(self, slot: _Slot) -> None:
        async with slot.send:
            stream = None
            try:
                stream = self._stream_piece(slot.piece.text)
                async for pcm in stream:
                    slot.started_audio.set()
                    try:
                        await slot.send.send(pcm)
                    except anyio.BrokenResourceError:
                        return  # the consumer has gone; nobody wants the rest
            except Exception as exc:  # the stream's own errors, BrokenResourceError too
                slot.error = exc
            finally:
                slot.started_audio.set()
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def audio(self) -> AsyncGenerator[bytes, None]:
        """The pieces' audio in order. Holds no nursery or cancel scope across its yields."""
        fade = self._join_fade_samples
        joins = JoinSmoother(fade) if fade else None
        async with self._order_receive:
            slot = await self._next_slot()
            while slot is not None:
                if joins is not None:
                    joins.start_piece()
                async with slot.receive:
                    async for pcm in slot.receive:
                        if joins is not None:
                            pcm = joins.push(pcm)
                        if pcm:
                            yield pcm
                if slot.error is not None:
                    if joins is not None and (tail := joins.end_piece(last=True)):
                        yield tail
                    if slot.piece.count != 1:
                        slot.error.add_note(f"while synthesizing {slot.piece.describe()}")
                    raise slot.error
                self._in_flight.release()
                following, ended = self._ready_slot()
                if joins is not None:
                    # Faded out unless known to be the end: a piece still to come must not click.
                    last = slot.piece.is_last or ended or (following is None and self._texts_ended)
                    tail = joins.end_piece(last=last)
                    if tail:
                        yield tail
                slot = following if following is not None or ended else await self._next_slot()
        if self._failure is not None:
            raise self._failure


    async def _next_slot(self) -> _Slot | None:
        try:
            return await self._order_receive.receive()
        except anyio.EndOfStream:
            return None

    def _ready_slot(self) -> tuple[_Slot | None, bool]:
        """The next piece if it has started already, and whether there is none to come."""
        try:
            return self._order_receive.receive_nowait(), False
        except anyio.WouldBlock:
            return None, False
        except anyio.EndOfStream:
            return None, True


@asynccontextmanager
async def open_ordered_stream(
    texts: Texts,
    stream_piece: StreamPiece,
    *,
    prefetch: int = DEFAULT_PREFETCH,
    max_buffered_chunks: int = DEFAULT_MAX_BUFFERED_CHUNKS,
    join_fade_samples: int = 0,
) -> AsyncIterator[AsyncIterator[bytes]]:
    """``async with open_ordered_stream(pieces, fn) as audio: async for pcm in audio: ...``

    Leaving the block cancels whatever is still being synthesized.
    """
    pipeline = _Pipeline(
        texts, stream_piece, prefetch, max_buffered_chunks, join_fade_samples
    )
    # The producer raises nothing but Cancelled, which its own scope absorbs, so a group
    # here wraps the one exception from the caller's block.
    with single_exception():
        async with anyio.create_task_group() as group:
            group.start_soon(pipeline.produce)
            audio = pipeline.audio()
            try:
                yield audio
            finally:
                # Shielded so that a Cancelled from this checkpoint cannot replace the
                # exception leaving the caller's block; closing channels never blocks.
                with anyio.CancelScope(shield=True):
                    await audio.aclose()
                group.cancel_scope.cancel()


async def ordered_stream(
    texts: Texts,
    stream_piece: StreamPiece,
    *,
    prefetch: int = DEFAULT_PREFETCH,
    max_buffered_chunks: int = DEFAULT_MAX_BUFFERED_CHUNKS,
    join_fade_samples: int = 0,
) -> AsyncGenerator[bytes, None]:
    """The same ordered audio as a plain async iterator (see the module docstring)."""
    pipeline = _Pipeline(
        texts, stream_piece, prefetch, max_buffered_chunks, join_fade_samples
    )
    producer_scope = anyio.CancelScope()
    producer_done = anyio.Event()

    async def run_producer() -> None:
        try:
            with producer_scope:
                await pipeline.produce()
        finally:
            producer_done.set()

    # The caller's context, so context variables (and tracing) carry into the pieces' requests.
    producer = spawn_detached(  # held: asyncio keeps only a weak reference to its tasks
        run_producer,
        name="orpheus long-text producer",
        context=contextvars.copy_context(),
    )
    audio = pipeline.audio()
    try:
        async for pcm in audio:
            yield pcm
    finally:
        producer_scope.cancel()
        with anyio.CancelScope(shield=True):
            await audio.aclose()
            await producer_done.wait()
        del producer
