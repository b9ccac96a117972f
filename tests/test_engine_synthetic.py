"""The synthetic engine: byte-exact, deterministic, scriptable."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import trio

from orpheus_trio.server.engine import AbortStream, EngineError, InvalidParam, RawLine
from orpheus_trio.server.engines.synthetic import (
    ScheduledFault,
    SyntheticEngine,
    chunk_count,
    expected_pcm,
    expected_stream,
)


async def collect(
    engine: SyntheticEngine, text: str, voice: str | None, params: dict[str, Any]
) -> list[Any]:
    return [
        piece
        async for piece in engine.synthesize(
            text, voice, engine.validate(voice, params)
        )
    ]


def test_pcm_is_a_pure_function_of_its_inputs() -> None:
    base = expected_pcm("hello", "tara", 0, {})
    assert base == expected_pcm("hello", "tara", 0, {})
    assert base == expected_pcm("hello", None, 0, {})  # None is the default voice
    assert len(base) == 2 * 2048
    others = [
        expected_pcm("hellp", "tara", 0, {}),
        expected_pcm("hello", "leo", 0, {}),
        expected_pcm("hello", "tara", 1, {}),
        expected_pcm("hello", "tara", 0, {"seed": 1}),
    ]
    assert all(other != base for other in others)
    assert len(expected_pcm("hello", "tara", 0, {"chunk_samples": 7})) == 14


def test_audio_is_audible_but_not_clipped() -> None:
    samples = np.frombuffer(
        b"".join(expected_stream("some text", None, {})), dtype=np.int16
    )
    assert 1000 < samples.std() < 8000


def test_chunk_count_from_text_length_or_param() -> None:
    assert chunk_count("a", {}) == 1
    assert chunk_count("x" * 100, {"chunk_samples": 1200}) == 100
    assert chunk_count("x" * 100, {"chunks": 3}) == 3


async def test_engine_yields_the_expected_stream() -> None:
    engine = SyntheticEngine()
    params = {"chunks": 4, "seed": 9}
    assert await collect(engine, "abc", "zoe", params) == expected_stream(
        "abc", "zoe", params
    )


async def test_faults_surface_as_engine_signals() -> None:
    engine = SyntheticEngine()
    with pytest.raises(AbortStream):
        await collect(engine, "a", None, {"chunks": 3, "cut_after": 3})
    with pytest.raises(EngineError) as error:
        await collect(engine, "a", None, {"fail_status": 429, "retry_after_s": 3})
    assert (error.value.status, error.value.code, error.value.retry_after_s) == (
        429,
        "overloaded",
        3,
    )
    with pytest.raises(EngineError) as in_band:
        await collect(
            engine, "a", None, {"chunks": 3, "error_after": 1, "error_code": "x"}
        )
    assert in_band.value.status is None and in_band.value.code == "x"
    pieces = await collect(engine, "a", None, {"chunks": 2, "malformed_after": 1})
    assert isinstance(pieces[1], RawLine) and len(pieces) == 3


def test_overrun_turns_off_the_deadline() -> None:
    assert (
        SyntheticEngine().validate(None, {"timeout_s": 5.0, "overrun": True})[
            "timeout_s"
        ]
        is None
    )
    assert SyntheticEngine().validate(None, {"timeout_s": 5.0})["timeout_s"] == 5.0


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"nope": 1}, "nope"),
        ({"rtf": -1}, "rtf"),
        ({"fail_status": 200}, "fail_status"),
        ({"error_code": ""}, "error_code"),
    ],
)
def test_validation_names_the_bad_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidParam) as error:
        SyntheticEngine().validate(None, params)
    assert error.value.key == key


def test_bad_server_options_fail_at_construction() -> None:
    with pytest.raises(InvalidParam):
        SyntheticEngine(defaults={"chunks": "many"})
    with pytest.raises(InvalidParam):
        SyntheticEngine(faults=[ScheduledFault({"bogus": 1}, every=2)])
    with pytest.raises(ValueError):
        ScheduledFault({}, every=2, fraction=0.5)
    with pytest.raises(ValueError):
        ScheduledFault({}, fraction=1.5)


def test_fractional_schedule_is_seeded_and_near_its_rate() -> None:
    fault = ScheduledFault({"ttfb_ms": 200}, fraction=0.05, seed=7)
    hits = [n for n in range(10_000) if fault.hits(n)]
    assert hits == [
        n for n in range(10_000) if ScheduledFault({}, fraction=0.05, seed=7).hits(n)
    ]
    assert hits != [
        n for n in range(10_000) if ScheduledFault({}, fraction=0.05, seed=8).hits(n)
    ]
    assert 400 <= len(hits) <= 600


async def test_scheduled_slow_first_chunk_hits_only_selected_requests() -> None:
    engine = SyntheticEngine(
        defaults={"chunks": 1}, faults=[ScheduledFault({"ttfb_ms": 300}, every=2)]
    )
    durations = []
    for _ in range(4):
        start = trio.current_time()
        await collect(engine, "t", None, {})
        durations.append(trio.current_time() - start)
    assert [d >= 0.3 for d in durations] == [False, True, False, True]
