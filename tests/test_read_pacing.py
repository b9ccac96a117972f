"""Read pacing: an engine's tokens read in fewer, bigger pieces, with no audio later for it.

The policy's arithmetic is checked with plain numbers; the synthesizer's use
of it on trio's MockClock, against a token source that delivers tokens at
exact times: the paced stream reads a fraction as often, yet every window but
the last comes out at the very same instant as without pacing, with the same
audio, and a listener that is not ahead of playback is never made to wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from _support_llm import audio_script, custom_token_text
from _support_snac import InstantDecoder, shared_decoder

from orpheus_trio.local.llm import FinishReason, SamplingParams
from orpheus_trio.local.read_pacing import ReadPacer
from orpheus_trio.local.stream_decode import StreamPlanner
from orpheus_trio.local.synthesizer import LocalSynthesizer
from orpheus_trio.local.tokens import TOKENS_PER_FRAME

# -- the policy ----------------------------------------------------------------------------------


def test_no_wait_before_the_first_audio_or_without_a_rate() -> None:
    pacer = ReadPacer(max_wait_s=10)
    pacer.arrived(0.0, 1)
    assert pacer.wait_s(0.0, wanted=100, audio_left_s=5.0) == 0  # one read: no rate yet
    pacer.arrived(0.1, 11)
    assert pacer.rate() == pytest.approx(100)
    assert pacer.wait_s(0.1, wanted=100, audio_left_s=None) == 0  # nothing played yet


def test_wait_is_a_share_of_the_time_the_missing_tokens_take() -> None:
    pacer = ReadPacer(share=0.5, max_wait_s=10, margin_s=0.25)
    pacer.arrived(0.0, 1)
    pacer.arrived(0.1, 11)  # 100 tokens/s
    # 41 wanted: the last one is due in 0.4 s; wake at half of that, reckoned from the last read.
    assert pacer.wait_s(0.1, wanted=41, audio_left_s=5.0) == pytest.approx(0.2)
    assert pacer.wait_s(0.15, wanted=41, audio_left_s=5.0) == pytest.approx(0.15)  # decoding took 50 ms
    assert pacer.wait_s(0.4, wanted=41, audio_left_s=5.0) == 0  # already past the wake time
    assert pacer.wait_s(0.1, wanted=1, audio_left_s=5.0) == 0  # the one wanted is read as it comes


def test_wait_is_capped_and_keeps_the_listener_s_margin() -> None:
    pacer = ReadPacer(share=0.5, max_wait_s=0.1, margin_s=0.25)
    pacer.arrived(0.0, 1)
    pacer.arrived(0.1, 11)
    assert pacer.wait_s(0.1, wanted=1000, audio_left_s=5.0) == pytest.approx(0.1)
    assert pacer.wait_s(0.1, wanted=1000, audio_left_s=0.3) == pytest.approx(0.05)
    assert pacer.wait_s(0.1, wanted=1000, audio_left_s=0.25) == 0
    assert pacer.wait_s(0.1, wanted=1000, audio_left_s=-1.0) == 0  # a listener already starved


def test_rate_is_the_faster_of_the_long_run_and_the_latest() -> None:
    pacer = ReadPacer()
    pacer.arrived(0.0, 1)
    pacer.arrived(1.0, 11)  # 10/s
    pacer.arrived(1.1, 21)  # 100/s lately; 20 in 1.1 s overall
    assert pacer.rate() == pytest.approx(100)
    pacer.arrived(2.1, 22)  # 1/s lately
    assert pacer.rate() == pytest.approx(21 / 2.1)
    pacer.arrived(2.2, 22)  # a read that brought nothing changes nothing
    assert pacer.rate() == pytest.approx(21 / 2.1)


@pytest.mark.parametrize("options", [{"share": 0}, {"share": 1.5}, {"max_wait_s": -1}, {"margin_s": float("nan")}])
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ReadPacer(**options)


@pytest.mark.parametrize(("first_hop", "max_hop"), [(1, 16), (2, 4), (3, 3)])
def test_frames_wanted_is_zero_exactly_when_a_window_is_ready(first_hop: int, max_hop: int) -> None:
    planner = StreamPlanner.for_decoder(shared_decoder(), first_hop=first_hop, max_hop=max_hop)
    for n in range(60):
        wanted = planner.frames_wanted()
        assert wanted >= 0
        # One frame short of the next window (wanted 1) and so on: pushing `wanted` frames opens it.
        ready = planner.next_window() is not None
        assert ready == (wanted == 0), (n, wanted)
        while planner.next_window() is not None:
            pass
        planner.push(np.zeros((1, TOKENS_PER_FRAME), dtype=np.int64))
    planner.finish()
    assert planner.frames_wanted() == 0


# -- the synthesizer on MockClock ----------------------------------------------------------------



@dataclass
class TimedTokens:
    """Token ``i`` arrives at ``start + i * gap_s``; a read returns all that arrived (as an engine's socket)."""

    tokens: Sequence[int]
    gap_s: float
    reads_can_wait: bool
    start: float = field(default_factory=trio.current_time)
    items: int = 0
    reads: int = 0
    result: FinishReason | None = None

    def __aiter__(self) -> TimedTokens:
        return self

    async def __anext__(self) -> str:
        if self.items == len(self.tokens):
            self.result = "stop"
            raise StopAsyncIteration
        due = self.start + self.items * self.gap_s
        await trio.sleep_until(due)  # a checkpoint even when it is due already, as a socket read
        arrived = min(len(self.tokens), int((trio.current_time() - self.start) / self.gap_s + 1e-9) + 1)
        piece = "".join(custom_token_text(t) for t in self.tokens[self.items : arrived])
        self.items = arrived
        self.reads += 1
        return piece

    async def aclose(self) -> None:
        pass


@dataclass
class TimedModel:
    tokens: Sequence[int]
    gap_s: float
    reads_can_wait: bool
    params_type: type[SamplingParams] = SamplingParams
    streams: list[TimedTokens] = field(default_factory=list)

    def prompt_ids(self, text: str, voice: str | None = None) -> str:
        return text

    def check_fits(self, prompt_length: int, params: SamplingParams) -> None:
        pass

    def open_tokens(self, prompt: Any, params: SamplingParams) -> TimedTokens:
        self.streams.append(TimedTokens(self.tokens, self.gap_s, self.reads_can_wait))
        return self.streams[-1]

    async def aclose(self) -> None:
        pass


async def listen(
    tokens: Sequence[int], gap_s: float, reads_can_wait: bool, max_tokens: int
) -> tuple[list[tuple[float, bytes]], int]:
    """(time, pcm) of every chunk, as fast as they come, and the reads the stream made."""
    model = TimedModel(tokens, gap_s, reads_can_wait)
    synth = LocalSynthesizer(model, InstantDecoder(shared_decoder()))  # type: ignore[arg-type]
    start = trio.current_time()
    chunks = []
    async with synth.open_stream("hello", "tara", max_tokens=max_tokens) as audio:
        async for pcm in audio:
            chunks.append((trio.current_time() - start, pcm))
    return chunks, model.streams[0].reads


def run_on_mock_clock(
    tokens: Sequence[int], gap_s: float, reads_can_wait: bool, max_tokens: int = 2000
) -> tuple[list[tuple[float, bytes]], int]:
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(listen, tokens, gap_s, reads_can_wait, max_tokens, clock=clock)


def test_paced_reads_are_few_yet_no_window_but_the_last_comes_later() -> None:
    tokens = audio_script(60)  # 5.1 s of audio
    gap_s = 1 / 250  # 3x real time, as an engine that keeps up
    plain, plain_reads = run_on_mock_clock(tokens, gap_s, reads_can_wait=False)
    paced, paced_reads = run_on_mock_clock(tokens, gap_s, reads_can_wait=True)
    assert plain_reads == len(tokens)
    # One read per token until the listener holds 0.25 s (the first 12 frames), then about 1 in 5.
    assert paced_reads <= 0.4 * len(tokens)
    assert b"".join(p for _, p in paced) == b"".join(p for _, p in plain)
    assert [len(p) for _, p in paced] == [len(p) for _, p in plain]
    assert [t for t, _ in paced[:-1]] == [t for t, _ in plain[:-1]]  # the first audio too
    # The reply ended inside a hop the pacer expected to fill: the end is read at most one wait late.
    assert 0 <= paced[-1][0] - plain[-1][0] <= ReadPacer.max_wait_s + 1e-9


def test_a_listener_not_ahead_of_playback_is_never_made_to_wait() -> None:
    tokens = audio_script(30)
    gap_s = 1 / 60  # slower than real time (82 tokens a second of audio)
    plain, _ = run_on_mock_clock(tokens, gap_s, reads_can_wait=False)
    paced, paced_reads = run_on_mock_clock(tokens, gap_s, reads_can_wait=True)
    assert paced_reads == len(tokens)
    assert paced == plain


def test_a_reply_that_ends_at_max_tokens_is_not_waited_past() -> None:
    tokens = audio_script(60)
    gap_s = 1 / 250
    plain, _ = run_on_mock_clock(tokens, gap_s, reads_can_wait=False, max_tokens=len(tokens))
    paced, paced_reads = run_on_mock_clock(tokens, gap_s, reads_can_wait=True, max_tokens=len(tokens))
    assert paced_reads <= 0.4 * len(tokens)
    assert paced == plain  # the last window too: the pacer knew where the reply had to end
