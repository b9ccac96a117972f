"""Streamed text in, sentences out, on time: the I/O shell around :class:`~.chunker.SentenceChunker`.

The source (an LLM's token stream, say) is read by a task of its own into a
memory channel, so that waiting for the next piece of text can time out at
the chunker's deadline without cancelling the source mid-read (cancelling an
async generator's ``__anext__`` ends it). Like ``longtext.ordered_stream`` the
reader is detached (an async generator cannot hold a task group across its
``yield``) and owned by a cancel scope that the generator cancels on its way
out; the source is closed then too. Runs under Trio and asyncio alike.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import AsyncGenerator, AsyncIterable

import anyio

from .._util.loops import spawn_detached
from .chunker import SentenceChunker

__all__ = ["sentences"]


async def sentences(
    text_chunks: AsyncIterable[str], chunker: SentenceChunker | None = None
) -> AsyncGenerator[str, None]:
    """The pieces of ``text_chunks`` to synthesize, each as soon as ``chunker`` says it is ready.

    An error from the source is raised here once the pieces completed before
    it have been yielded (the unfinished text after them is dropped).
    """
    if isinstance(text_chunks, str) or not isinstance(text_chunks, AsyncIterable):
        raise TypeError(
            "text_chunks must be an async iterable of str (an LLM's token stream); "
            f"got {type(text_chunks).__name__} (for a whole text, use stream())"
        )
    chunker = chunker if chunker is not None else SentenceChunker()
    send, receive = anyio.create_memory_object_stream[str](math.inf)
    failure: list[Exception] = []
    reader_scope = anyio.CancelScope()
    reader_done = anyio.Event()

    async def read() -> None:
        source = aiter(text_chunks)
        try:
            with reader_scope:
                async with send:
                    async for chunk in source:
                        if not isinstance(chunk, str):
                            raise TypeError(
                                f"text_chunks must yield str, got {type(chunk).__name__}"
                            )
                        send.send_nowait(chunk)
        except Exception as exc:  # the source's own errors: raised to the consumer in order
            failure.append(exc)
        finally:
            aclose = getattr(source, "aclose", None)
            try:
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
            finally:
                reader_done.set()

    reader = spawn_detached(  # held: asyncio keeps only a weak reference to its tasks
        read, name="orpheus text reader", context=contextvars.copy_context()
    )
    try:
        async with receive:
            while True:
                deadline = chunker.deadline
                chunk: str | None = None
                ended = False
                with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
                    try:
                        chunk = await receive.receive()
                    except anyio.EndOfStream:
                        ended = True
                now = anyio.current_time()
                if ended:
                    if failure:
                        raise failure[0]
                    for piece in chunker.finish(now):
                        yield piece
                    return
                # No chunk: the deadline passed first.
                ready = chunker.poll(now) if chunk is None else chunker.feed(chunk, now)
                for piece in ready:
                    yield piece
    finally:
        reader_scope.cancel()
        with anyio.CancelScope(shield=True):
            await reader_done.wait()
        del reader
