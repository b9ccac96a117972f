"""The minimum body rate: the policy's arithmetic, and FrameReader enforcing it on trio's
MockClock (exact times). Real sockets, both transports and failover: tests/test_faults.py."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

import httpx
import pytest
import trio
import trio.testing

from orpheus_trio import DeadlineExceeded, SlowBodyError, Timeouts
from orpheus_trio._policy.body_rate import (
    DEFAULT_MIN_RATE_BYTES,
    DEFAULT_MIN_RATE_WINDOW_S,
    BodyRate,
)
from orpheus_trio.protocol.frames import Chunk, EndOfStream, encode_chunk, encode_eos
from orpheus_trio.stream import FrameReader

# -- the policy ----------------------------------------------------------------------


def test_nothing_is_measured_before_the_first_byte() -> None:
    rate = BodyRate(100, 10.0)
    # The head came, no body yet: a long wait is the read timeout's, not this rule's.
    assert rate.observe(500.0, 0) and rate.level == 100
    assert rate.observe(3.0, 1) and rate.level == 100  # the bucket starts full
    assert rate.observe(10.0, 0) and rate.level == 0  # exactly one window of waiting
    assert not rate.observe(0.001, 1000)  # these came after the bucket ran dry


def test_the_bucket_drains_with_waiting_and_fills_with_bytes() -> None:
    rate = BodyRate(100, 10.0)  # drains 10 bytes per second of waiting
    rate.observe(0.0, 1)
    assert rate.observe(4.0, 0) and rate.level == pytest.approx(60)
    assert rate.observe(1.0, 30) and rate.level == pytest.approx(80)  # 100 - 40 - 10 + 30
    assert not rate.observe(8.1, 1000)


def test_a_burst_buys_at_most_one_window() -> None:
    rate = BodyRate(100, 10.0)
    rate.observe(0.0, 1)
    assert rate.observe(0.0, 10_000_000) and rate.level == 100
    assert not rate.observe(10.5, 100)


def test_a_body_at_exactly_the_minimum_rate_is_never_cut() -> None:
    rate = BodyRate(100, 10.0)
    rate.observe(0.0, 1)
    for _ in range(1000):
        assert rate.observe(1.0, 10)
    assert rate.level == pytest.approx(100)


@pytest.mark.parametrize("min_bytes", [0, -1, 1.5, True, "1024"])
def test_min_rate_bytes_must_be_a_positive_integer(min_bytes: object) -> None:
    with pytest.raises(ValueError, match=r"Timeouts\.min_rate_bytes must be an integer >= 1"):
        Timeouts(min_rate_bytes=min_bytes)  # type: ignore[arg-type]


@pytest.mark.parametrize("window_s", [0, -1.0, math.inf, math.nan, True, None])
def test_min_rate_window_must_be_positive_seconds(window_s: object) -> None:
    with pytest.raises(ValueError, match=r"Timeouts\.min_rate_window_s must be a positive number"):
        Timeouts(min_rate_window_s=window_s)  # type: ignore[arg-type]


def test_the_defaults_and_none() -> None:
    rate = Timeouts().body_rate()
    assert rate is not None
    assert (rate.min_bytes, rate.window_s) == (DEFAULT_MIN_RATE_BYTES, DEFAULT_MIN_RATE_WINDOW_S)
    assert (DEFAULT_MIN_RATE_BYTES, DEFAULT_MIN_RATE_WINDOW_S) == (1024, 10.0)
    assert Timeouts(min_rate_bytes=None).body_rate() is None


# -- FrameReader on MockClock ----------------------------------------------------------


class ScriptedResponse:
    """A body whose pieces come after scripted waits; then it waits forever."""

    status = 200
    headers: dict[str, str] = {}

    def __init__(self, pieces: Sequence[tuple[float, bytes]]) -> None:
        self._pieces = list(pieces)
        self.reads = 0

    async def receive(self) -> bytes:
        self.reads += 1
        if not self._pieces:
            await trio.sleep_forever()
        wait_s, data = self._pieces.pop(0)
        await trio.sleep(wait_s)
        return data

    async def aclose(self) -> None:
        pass


def reader_for(response: ScriptedResponse, timeouts: Timeouts) -> FrameReader:
    return FrameReader(
        response,
        endpoint="http://w1",
        max_line_bytes=1 << 20,
        on_metrics=lambda frame: None,
        body_rate=timeouts.body_rate(),
    )


async def read_all(reader: FrameReader) -> list[Chunk | EndOfStream]:
    frames: list[Chunk | EndOfStream] = []
    while (frame := await reader.next_frame()) is not None:
        frames.append(frame)
    return frames


async def ended_at(run: Callable[[], Awaitable[object]]) -> tuple[BaseException, float]:
    start = trio.current_time()
    with pytest.raises(Exception) as caught:
        await run()
    return caught.value, trio.current_time() - start


async def test_one_byte_a_second_is_cut_off_by_the_default_rule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A blank line a second: never silent for the 60 s read timeout, no deadline set.
    response = ScriptedResponse([(1.0, b"\n")] * 1000)
    reader = reader_for(response, Timeouts())
    error, elapsed = await ended_at(lambda: read_all(reader))
    assert isinstance(error, SlowBodyError) and isinstance(error, httpx.ReadTimeout)
    assert "slower than 1024 bytes per 10 s" in str(error) and "min_rate_window_s" in str(error)
    # The first byte at 1 s fills the bucket (1024); each later second drains 102.4 and
    # brings 1: 10 left after 10 more reads, so the 11th comes after it ran dry.
    assert elapsed == pytest.approx(1 + 11)
    assert response.reads == 12


async def test_after_audio_the_error_counts_the_chunks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pieces = [(0.0, encode_chunk(0, b"\x01\x02" * 600)), (0.5, encode_chunk(1, b"\x03\x04"))]
    response = ScriptedResponse(pieces + [(1.0, b" ")] * 100)
    reader = reader_for(response, Timeouts(min_rate_bytes=100, min_rate_window_s=2.0))
    reader.hand_over(math.inf)
    frames: list[Chunk | EndOfStream] = []

    async def read() -> None:
        while (frame := await reader.next_frame()) is not None:
            frames.append(frame)

    error, elapsed = await ended_at(read)
    assert [frame.seq for frame in frames if isinstance(frame, Chunk)] == [0, 1]
    assert isinstance(error, SlowBodyError) and error.chunks_received == 2
    # Full (100) after chunk 1; then 50 drained and 1 byte gained per second: 51 left after
    # the first space, 2 after the second, so the third comes after the bucket ran dry.
    assert elapsed == pytest.approx(0.5 + 1 + 1 + 1)


async def test_time_the_caller_spends_away_is_not_the_servers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chunks = [encode_chunk(seq, b"\x00\x00" * 10) for seq in range(5)]
    response = ScriptedResponse([(0.0, line) for line in chunks] + [(0.0, encode_eos(5, 50))])
    reader = reader_for(response, Timeouts(min_rate_bytes=1000, min_rate_window_s=1.0))
    reader.hand_over(math.inf)
    received = []
    while (frame := await reader.next_frame()) is not None:
        received.append(frame)
        await trio.sleep(60.0)  # a slow consumer: backpressure, not a slow server
    assert isinstance(received[-1], EndOfStream) and len(received) == 6


async def test_the_deadline_still_wins_when_it_comes_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response = ScriptedResponse([(0.0, b"\n")] + [(1.0, b"\n")] * 100)
    reader = reader_for(response, Timeouts())
    reader.hand_over(trio.current_time() + 3.0)
    error, elapsed = await ended_at(lambda: read_all(reader))
    assert isinstance(error, DeadlineExceeded) and elapsed == pytest.approx(3.0)


async def test_no_minimum_rate_with_none(autojump_clock: trio.testing.MockClock) -> None:
    response = ScriptedResponse([(1.0, b"\n")] * 100 + [(1.0, encode_eos(0, 0))])
    reader = reader_for(response, Timeouts(min_rate_bytes=None))
    frames = await read_all(reader)
    assert isinstance(frames[-1], EndOfStream) and trio.current_time() >= 101
