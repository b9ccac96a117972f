"""Joins between pieces of speech: the discontinuity measure, the smoother, and long text end to end."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from _support_server import StartServer

from orpheus_trio.client import OrpheusTTS
from orpheus_trio.audio.joins import DEFAULT_FADE_SAMPLES, JoinSmoother, join_discontinuities
from orpheus_trio.server.engines.espeak import EspeakEngine
from orpheus_trio.server.engines.synthetic import SyntheticEngine

FADE = DEFAULT_FADE_SAMPLES
#: A seamless join's step is no bigger than what the signal itself does on both sides.
SEAMLESS = 1.5


def tone(n: int, *, start: int = 0, amplitude: float = 8000, period: float = 96) -> np.ndarray:
    t = np.arange(start, start + n)
    return np.rint(amplitude * np.sin(2 * np.pi * t / period)).astype(np.int16)


def smooth(pieces: list[np.ndarray], chunk: int, fade: int = FADE) -> np.ndarray:
    """Run pieces through a JoinSmoother in chunks of ``chunk`` samples."""
    smoother = JoinSmoother(fade)
    out = bytearray()
    for i, piece in enumerate(pieces):
        smoother.start_piece()
        data = piece.astype("<i2").tobytes()
        for at in range(0, len(data), 2 * chunk):
            out += smoother.push(data[at : at + 2 * chunk])
        out += smoother.end_piece(last=i == len(pieces) - 1)
    return np.frombuffer(bytes(out), dtype="<i2")


def join_points(pieces: list[np.ndarray]) -> list[int]:
    return [int(n) for n in np.cumsum([len(p) for p in pieces])[:-1]]


# -- the measure ----------------------------------------------------------------------------------


def test_a_waveform_that_continues_across_the_join_measures_seamless() -> None:
    signal = tone(4800)
    assert max(join_discontinuities(signal, [1000, 2401, 3333])) <= 1.05
    assert join_discontinuities(signal.tobytes(), [1000]) == join_discontinuities(signal, [1000])


def test_a_jump_out_of_silence_or_mid_waveform_measures_as_many_times_the_signals_own_steps() -> None:
    silence_then_loud = np.concatenate([np.zeros(500, np.int16), np.full(500, 6000, np.int16)])
    # Mid-waveform cut: the first piece stops at a peak, the next starts at a trough.
    cut = np.concatenate([tone(24, start=0), tone(500, start=48)])
    silent_step, cut_step = (
        join_discontinuities(silence_then_loud, [500])[0],
        join_discontinuities(cut, [24])[0],
    )
    assert silent_step == pytest.approx(6000 / 32)  # the floor: steps as quiet as dither
    assert cut_step > 10


def test_noise_joined_to_noise_is_no_discontinuity() -> None:
    noise = np.random.default_rng(1).integers(-6000, 6000, 2000).astype(np.int16)
    assert max(join_discontinuities(noise, [700, 1300, 1700])) <= SEAMLESS


def test_bad_join_positions_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="join at sample 10 is outside the audio"):
        join_discontinuities(np.zeros(10, np.int16), [10])
    with pytest.raises(ValueError, match="window must be >= 1"):
        join_discontinuities(np.zeros(10, np.int16), [5], window=0)


# -- the smoother ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, FADE, 1000])
def test_smoothed_joins_are_seamless_and_nothing_else_changes(chunk: int) -> None:
    # Each piece starts and ends at full level: every butted join is a click.
    pieces = [np.full(900, 5000, np.int16), tone(700, start=24), np.full(800, -7000, np.int16)]
    butted = np.concatenate(pieces)
    joins = join_points(pieces)
    assert min(join_discontinuities(butted, joins)) > 50

    smoothed = smooth(pieces, chunk)
    assert len(smoothed) == len(butted)
    assert max(join_discontinuities(smoothed, joins)) <= SEAMLESS
    near = np.zeros(len(butted), bool)
    for j in joins:
        near[j - FADE : j + FADE] = True
    assert np.array_equal(smoothed[~near], butted[~near])
    # The joins meet at silence, and the fades never overshoot the original level.
    for j in joins:
        assert smoothed[j - 1] == 0 and smoothed[j] == 0
    assert np.all(np.abs(smoothed.astype(int)) <= np.abs(butted.astype(int)))


def test_pieces_shorter_than_the_fade_are_faded_within_their_length() -> None:
    pieces = [np.full(300, 4000, np.int16), np.full(50, 4000, np.int16), np.full(300, 4000, np.int16)]
    smoothed = smooth(pieces, 16)
    assert len(smoothed) == 650
    assert smoothed[299] == 0 and smoothed[300] == 0 and smoothed[349] == 0 and smoothed[350] == 0
    assert smoothed[0] == 4000 and smoothed[-1] == 4000


def test_smoother_misuse_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="fade_samples must be >= 1"):
        JoinSmoother(0)
    smoother = JoinSmoother(4)
    with pytest.raises(RuntimeError, match="start_piece"):
        smoother.push(b"\x00\x00")
    smoother.start_piece()
    with pytest.raises(ValueError, match="whole 16-bit samples"):
        smoother.push(b"\x00\x00\x00")
    smoother.push(b"\x01\x00" * 10)
    with pytest.raises(RuntimeError, match="end_piece"):
        smoother.start_piece()


# -- long text end to end: the real client, the reference server, real engines ------------------

#: Paragraphs, so that long text is always four pieces (pieces never cross a paragraph break).
#: espeak starts "I", "Oh" and "Anyway" at full level: butted after a silent tail, they click.
PARAGRAPHS = [
    "Hello there, how are you doing today?",
    "I am fine, thanks.",
    "Oh, everything is lovely here.",
    "Anyway, it was good to hear from you.",
]


class RecordingTTS(OrpheusTTS):
    """The real client, keeping each request's audio exactly as it arrived (espeak's pieces vary
    by a few samples from one synthesis to the next, so "as butted" must be the same requests)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[bytearray] = []

    @asynccontextmanager
    async def open_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        received = bytearray()
        self.received.append(received)

        async def recorded(audio: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
            async for pcm in audio:
                received.extend(pcm)
                yield pcm

        async with super().open_stream(*args, **kwargs) as audio:
            yield recorded(audio)


@pytest.mark.parametrize(
    "make_engine, params",
    [(EspeakEngine, {}), (SyntheticEngine, {"chunk_samples": 1000})],
    ids=["espeak", "synthetic"],
)
async def test_long_text_joins_are_seamless_and_only_the_joins_change(
    start_server: StartServer, make_engine: Any, params: dict[str, Any]
) -> None:
    server = await start_server(make_engine())
    async with RecordingTTS(server.base_url) as client:
        joined = np.frombuffer(
            await client.synthesize("\n\n".join(PARAGRAPHS), split="sentences", **params),
            "<i2",
        )
    alone = [np.frombuffer(bytes(pcm), "<i2") for pcm in client.received]
    assert len(alone) == len(PARAGRAPHS)
    butted, joins = np.concatenate(alone), join_points(alone)
    assert len(joined) == len(butted)
    ratios = join_discontinuities(joined, joins)
    assert max(ratios) <= SEAMLESS, f"join discontinuities {ratios}"
    near = np.zeros(len(butted), bool)
    for j in joins:
        near[j - FADE : j + FADE] = True
    assert np.array_equal(joined[~near], butted[~near])
