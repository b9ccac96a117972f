"""The ordered, bounded-prefetch pipeline for long text, on scripted fake piece streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from _support_server import StartServer

from orpheus_trio.client import OrpheusTTS
from orpheus_trio.errors import ServiceError
from orpheus_trio.audio.joins import DEFAULT_FADE_SAMPLES
from orpheus_trio.text.longtext import open_ordered_stream, ordered_stream
from orpheus_trio.server.engines.synthetic import (
    ScheduledFault,
    SyntheticEngine,
    expected_pcm,
    expected_stream,
)
from orpheus_trio.text.split import split_text


@dataclass
class Script:
    """Per piece text: the chunks it yields, seconds before each, and an optional failure at the end."""

    chunks: list[bytes]
    delay_s: float = 0.0
    fail: Exception | None = None
    gate: trio.Event | None = None  # waited for after the first chunk


@dataclass
class FakeEngine:
    scripts: dict[str, Script]
    requested: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    closed: list[str] = field(default_factory=list)
    produced: dict[str, int] = field(default_factory=dict)
    running: int = 0
    max_running: int = 0
    on_request: Callable[[str], None] | None = None
    stream: Callable[[str], AsyncIterator[bytes]] | None = None

    async def stream_piece(self, text: str) -> AsyncIterator[bytes]:
        if self.stream is not None:
            async with aclosing(self.stream(text)) as real:  # type: ignore[type-var]
                async for pcm in real:
                    yield pcm
            return
        self.requested[text] = trio.current_time()
        if self.on_request:
            self.on_request(text)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        script = self.scripts[text]
        try:
            for i, chunk in enumerate(script.chunks):
                await trio.sleep(script.delay_s)
                self.produced[text] = self.produced.get(text, 0) + 1
                yield chunk
                if i == 0 and script.gate is not None:
                    await script.gate.wait()
            if script.fail is not None:
                raise script.fail
            self.finished[text] = trio.current_time()
        finally:
            self.running -= 1
            self.closed.append(text)


def pcm(tag: int, n: int = 4) -> bytes:
    return bytes([tag, 0]) * n


async def consume_cm(texts: list[str], engine: FakeEngine, **kw: int) -> list[bytes]:
    async with open_ordered_stream(texts, engine.stream_piece, **kw) as audio:
        return [chunk async for chunk in audio]


async def consume_iter(texts: list[str], engine: FakeEngine, **kw: int) -> list[bytes]:
    async with aclosing(ordered_stream(texts, engine.stream_piece, **kw)) as audio:
        return [chunk async for chunk in audio]


Consume = Callable[..., Awaitable[list[bytes]]]
BOTH = pytest.mark.parametrize(
    "consume", [consume_cm, consume_iter], ids=["context", "iterator"]
)


@BOTH
async def test_audio_is_yielded_in_piece_order_when_later_pieces_finish_first(
    consume: Consume, autojump_clock: trio.testing.MockClock
) -> None:
    engine = FakeEngine(
        {
            "a": Script([pcm(1), pcm(2), pcm(3)], delay_s=1.0),
            "b": Script([pcm(4), pcm(5)], delay_s=0.01),
            "c": Script([pcm(6)], delay_s=0.5),
        }
    )
    chunks = await consume(["a", "b", "c"], engine)
    assert chunks == [pcm(i) for i in range(1, 7)]
    assert engine.finished["b"] < engine.finished["a"]


@BOTH
async def test_second_piece_is_requested_before_the_first_finishes(
    consume: Consume, autojump_clock: trio.testing.MockClock
) -> None:
    second_requested = trio.Event()
    engine = FakeEngine(
        {
            "first": Script([pcm(1), pcm(2)], delay_s=1.0, gate=second_requested),
            "second": Script([pcm(3)]),
        },
        on_request=lambda text: second_requested.set() if text == "second" else None,
    )
    # Without prefetch the first piece would wait for the second forever: the deadline would fire.
    with trio.fail_after(60):
        chunks = await consume(["first", "second"], engine)
    assert chunks == [pcm(1), pcm(2), pcm(3)]
    # Requested the moment the first piece produced audio, not at t=0 and not after it finished.
    assert engine.requested["second"] == pytest.approx(engine.requested["first"] + 1.0)
    assert engine.requested["second"] < engine.finished["first"]


async def test_without_prefetch_pieces_run_one_after_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine(
        {t: Script([pcm(i)] * 3, delay_s=1.0) for i, t in enumerate("abc")}
    )
    chunks = await consume_cm(list("abc"), engine, prefetch=0)
    assert chunks == [pcm(0)] * 3 + [pcm(1)] * 3 + [pcm(2)] * 3
    assert engine.max_running == 1
    assert engine.requested["b"] >= engine.finished["a"]


@BOTH
async def test_prefetch_bounds_the_pieces_in_flight(
    consume: Consume, autojump_clock: trio.testing.MockClock
) -> None:
    engine = FakeEngine({str(i): Script([pcm(i)] * 4, delay_s=0.25) for i in range(8)})
    chunks = await consume([str(i) for i in range(8)], engine, prefetch=2)
    assert chunks == [pcm(i) for i in range(8) for _ in range(4)]
    assert engine.max_running == 3


async def test_prefetched_piece_is_paused_by_its_buffer_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine(
        {"slow": Script([pcm(1)] * 5, delay_s=10.0), "fast": Script([pcm(2)] * 50)}
    )
    seen_while_slow: list[int] = []
    async with open_ordered_stream(
        ["slow", "fast"], engine.stream_piece, max_buffered_chunks=3
    ) as audio:
        async for chunk in audio:
            if chunk == pcm(1):
                seen_while_slow.append(engine.produced.get("fast", 0))
    # 3 buffered plus 1 waiting in send: the prefetched stream stopped there until its turn came.
    assert max(seen_while_slow) == 4
    assert engine.produced["fast"] == 50


@BOTH
async def test_failing_piece_raises_its_own_error_naming_the_piece_after_earlier_audio(
    consume: Consume, autojump_clock: trio.testing.MockClock
) -> None:
    failure = ServiceError("engine_error", "model fell over")
    engine = FakeEngine(
        {
            "one.": Script([pcm(1)], delay_s=1),
            "two.": Script([pcm(2)], delay_s=1),
            "three is broken.": Script([pcm(3)], delay_s=1, fail=failure),
            "four.": Script([pcm(4)], delay_s=100),
        }
    )
    received: list[bytes] = []

    async def run() -> None:
        async with open_ordered_stream(
            list(engine.scripts), engine.stream_piece
        ) as audio:
            async for chunk in audio:
                received.append(chunk)

    if consume is consume_cm:
        with pytest.raises(ServiceError) as info:
            await run()
    else:
        with pytest.raises(ServiceError) as info:
            async with aclosing(
                ordered_stream(list(engine.scripts), engine.stream_piece)
            ) as it:
                async for chunk in it:
                    received.append(chunk)
    assert info.value is failure
    assert (
        "while synthesizing piece 3 of 4 ('three is broken.')" in info.value.__notes__
    )
    # Everything before the failing piece was delivered, including its own audio up to the failure.
    assert received == [pcm(1), pcm(2), pcm(3)]
    # The piece after it was started (prefetch) and then cancelled, never finished.
    assert "four." in engine.closed and "four." not in engine.finished


@BOTH
async def test_leaving_early_cancels_and_closes_every_piece_in_flight(
    consume: Consume, autojump_clock: trio.testing.MockClock
) -> None:
    engine = FakeEngine({t: Script([pcm(1)] * 100, delay_s=0.1) for t in "xyz"})
    if consume is consume_cm:
        async with open_ordered_stream(list("xyz"), engine.stream_piece) as audio:
            async for _ in audio:
                break
    else:
        async with aclosing(ordered_stream(list("xyz"), engine.stream_piece)) as it:
            async for _ in it:
                break
    await trio.testing.wait_all_tasks_blocked()
    assert engine.running == 0
    assert sorted(engine.closed) == sorted(engine.requested) and engine.finished == {}


async def test_exception_in_the_callers_block_comes_out_as_itself() -> None:
    engine = FakeEngine({"a": Script([pcm(1)])})
    with pytest.raises(KeyError, match="mine"):
        async with open_ordered_stream(["a"], engine.stream_piece) as audio:
            async for _ in audio:
                raise KeyError("mine")


async def test_no_pieces_no_audio_and_bad_settings_are_refused() -> None:
    assert await consume_cm([], FakeEngine({})) == []
    assert await consume_iter([], FakeEngine({})) == []
    with pytest.raises(ValueError, match="prefetch must be >= 0"):
        async with open_ordered_stream(["a"], FakeEngine({}).stream_piece, prefetch=-1):
            pass
    with pytest.raises(ValueError, match="max_buffered_chunks"):
        async with aclosing(
            ordered_stream(["a"], FakeEngine({}).stream_piece, max_buffered_chunks=0)
        ) as it:
            async for _ in it:
                pass


# -- end to end: the real client against the reference server's synthetic engine ---------------


def assert_same_but_the_joins(audio: bytes, pieces: list[bytes]) -> None:
    """``audio`` is ``pieces`` butted together except within a join's fade (``test_joins``)."""

    def outside_the_joins(data: bytes) -> bytes:
        masked, at, fade = bytearray(data), 0, 2 * DEFAULT_FADE_SAMPLES
        for piece in pieces[:-1]:
            at += len(piece)
            masked[at - fade : at + fade] = bytes(2 * fade)
        return bytes(masked)

    assert len(audio) == sum(map(len, pieces))
    assert outside_the_joins(audio) == outside_the_joins(b"".join(pieces))


@dataclass
class RecordingEngine(SyntheticEngine):
    """The synthetic engine, noting when each text's synthesis starts and ends."""

    log: list[tuple[str, str, float]] = field(default_factory=list)

    def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        return self._recorded(text, super().synthesize(text, voice, params))

    async def _recorded(
        self, text: str, inner: AsyncGenerator[Any, None]
    ) -> AsyncGenerator[Any, None]:
        self.log.append(("start", text, trio.current_time()))
        async with aclosing(inner):
            async for piece in inner:
                yield piece
        self.log.append(("end", text, trio.current_time()))


@BOTH
async def test_long_text_through_the_client_is_byte_exact_in_order_and_prefetched(
    consume: Consume, start_server: StartServer
) -> None:
    engine = RecordingEngine()
    server = await start_server(engine)
    texts = ["Piece one is the longest here.", "Piece two.", "Piece three, the last."]
    params: dict[str, Any] = {
        "chunk_samples": 2400,
        "rtf": 0.5,
    }  # 50 ms per chunk: each piece takes a while
    async with OrpheusTTS(server.base_url) as client:
        chunks = await consume(
            texts,
            FakeEngine({}, stream=lambda text: client.stream(text, None, **params)),
        )
    assert b"".join(chunks) == b"".join(
        b"".join(expected_stream(t, None, params)) for t in texts
    )
    start = {text: at for kind, text, at in engine.log if kind == "start"}
    end = {text: at for kind, text, at in engine.log if kind == "end"}
    assert (
        start[texts[1]] < end[texts[0]]
    )  # the second piece was synthesized while the first streamed
    # Bounded: with prefetch 1 the third piece waits until the first has been consumed.
    assert start[texts[2]] > end[texts[0]]


# -- OrpheusTTS.stream(): long text goes through this pipeline ---------------------------------


async def test_client_stream_splits_long_text_into_ordered_pieces(
    start_server: StartServer,
) -> None:
    engine = RecordingEngine()
    server = await start_server(engine)
    text = "\n\n".join(
        f"Paragraph {i} has a sentence. And another one follows it. " * 3
        for i in range(3)
    )
    params: dict[str, Any] = {"chunk_samples": 1200}
    async with OrpheusTTS(server.base_url) as client:
        split = b"".join([pcm async for pcm in client.stream(text, **params)])
        short = b"".join([pcm async for pcm in client.stream("Short text.", **params)])
        whole = b"".join(
            [pcm async for pcm in client.stream(text, split="never", **params)]
        )
    pieces = split_text(text)
    assert len(text) > 400 and len(pieces) == 3
    assert_same_but_the_joins(
        split, [b"".join(expected_stream(p, None, params)) for p in pieces]
    )
    assert short == b"".join(expected_stream("Short text.", None, params))
    assert whole == b"".join(expected_stream(text, None, params))
    assert [t for kind, t, _ in engine.log if kind == "start"] == [
        *pieces,
        "Short text.",
        text,
    ]


async def test_client_stream_names_the_failing_piece(start_server: StartServer) -> None:
    # Every second request ends with an in-band error after its first chunk: here, piece 2.
    engine = SyntheticEngine(faults=[ScheduledFault({"error_after": 1}, every=2)])
    server = await start_server(engine)
    one, two, three = (
        f"{name} " + "la " * 50 + "end." for name in ("One", "Two", "Three")
    )
    params: dict[str, Any] = {"chunk_samples": 1200}
    received = bytearray()
    async with OrpheusTTS(server.base_url) as client:
        with pytest.raises(ServiceError) as info:
            async for pcm in client.stream(f"{one} {two} {three}", **params):
                received += pcm
    assert info.value.code == "engine_error"
    assert (
        "while synthesizing piece 2 of 3 ('Two la la la la la la la la la la la la ...')"
        in info.value.__notes__
    )
    assert_same_but_the_joins(
        bytes(received),
        [b"".join(expected_stream(one, None, params)), expected_pcm(two, None, 0, params)],
    )


async def test_client_stream_rejects_long_blank_text_clearly(start_server: StartServer) -> None:
    server = await start_server()
    async with OrpheusTTS(server.base_url) as client:
        with pytest.raises(ValueError, match="non-empty"):
            async for _ in client.stream(" \n" * 300):
                pass


@BOTH
async def test_a_piece_whose_own_stream_breaks_raises_rather_than_ending_short(
    consume: Consume, autojump_clock: trio.testing.MockClock
) -> None:
    # BrokenResourceError from the piece's stream (a transport built on trio streams),
    # not from a consumer that went away: the audio is incomplete and must say so.
    broken = trio.BrokenResourceError("connection lost")
    engine = FakeEngine(
        {
            "one.": Script([pcm(1), pcm(2)], delay_s=1, fail=broken),
            "two.": Script([pcm(3)], delay_s=1),
        }
    )
    with pytest.raises(trio.BrokenResourceError) as info:
        await consume(list(engine.scripts), engine)
    assert info.value is broken
    assert "while synthesizing piece 1 of 2 ('one.')" in info.value.__notes__


# -- texts that arrive over time (an async iterable) --------------------------------------------


async def arriving(texts: list[object], gap_s: float, fail: Exception | None = None) -> AsyncIterator[str]:
    for text in texts:
        await trio.sleep(gap_s)
        yield text  # type: ignore[misc]
    if fail is not None:
        raise fail


@BOTH
async def test_texts_from_an_async_iterable_are_started_as_they_arrive_in_order(
    consume: Consume, autojump_clock: trio.testing.MockClock
) -> None:
    engine = FakeEngine({t: Script([pcm(i)] * 2, delay_s=0.1) for i, t in enumerate("abc")})
    if consume is consume_cm:
        async with open_ordered_stream(arriving(list("abc"), 5.0), engine.stream_piece) as audio:
            chunks = [chunk async for chunk in audio]
    else:
        async with aclosing(ordered_stream(arriving(list("abc"), 5.0), engine.stream_piece)) as it:
            chunks = [chunk async for chunk in it]
    assert chunks == [pcm(0)] * 2 + [pcm(1)] * 2 + [pcm(2)] * 2
    # Each piece was requested the moment its text arrived, not when the texts ended.
    assert [engine.requested[t] for t in "abc"] == pytest.approx([5.0, 10.0, 15.0])


async def test_a_failing_text_source_raises_after_the_audio_of_the_texts_it_gave(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine({t: Script([pcm(i)], delay_s=1.0) for i, t in enumerate("ab")})
    received: list[bytes] = []
    with pytest.raises(ConnectionError, match="llm went away") as info:
        async with open_ordered_stream(
            arriving(list("ab"), 0.1, fail=ConnectionError("llm went away")), engine.stream_piece
        ) as audio:
            async for chunk in audio:
                received.append(chunk)
    assert received == [pcm(0), pcm(1)]
    assert "while reading the texts (after 2 pieces)" in info.value.__notes__
    with pytest.raises(TypeError, match="texts must be str, got int"):
        await consume_iter(arriving([1], 0.1), engine)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one str"):
        await consume_iter("abc", engine)  # type: ignore[arg-type]


async def test_with_join_fades_only_joins_to_a_following_piece_are_faded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    level = (1000).to_bytes(2, "little", signed=True)
    engine = FakeEngine({t: Script([level * 300]) for t in "ab"})
    for texts in (["a", "b"], arriving(["a", "b"], 0.0)):
        async with open_ordered_stream(texts, engine.stream_piece, join_fade_samples=100) as audio:
            out = b"".join([chunk async for chunk in audio])
        samples = [int.from_bytes(out[i : i + 2], "little", signed=True) for i in range(0, len(out), 2)]
        assert len(samples) == 600
        assert samples[0] == 1000 and samples[-1] == 1000  # the ends are not joins
        assert samples[299] == 0 and samples[300] == 0  # the join meets at silence
        assert samples[:200] == [1000] * 200 and samples[400:] == [1000] * 200
