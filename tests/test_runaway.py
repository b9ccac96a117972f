"""The runaway guard: a looping or endless generation is ended early and said so, normal speech never is.

The sans-IO guard on scripted frames (exact frame counts), the text budget and
the derived ``max_tokens``; then every Orpheus path: on-box with the tests'
endlessly looping tiny model, the engine worker in front of an engine that
never stops, and the client's warning through the real server.
"""

from __future__ import annotations

import json
from functools import cache

import httpx
import numpy as np
import pytest
import trio
from _support_faults import Conn, RawServer, Reply
from _support_gateway import start_gateway
from _support_llm import audio_script, custom_token_text, scripted_model_dir, snac_dir
from _support_server import StartServer, parse_frames
from _support_snac import random_frames, shared_decoder

from orpheus_trio import OrpheusTTS, RunawaySpeechWarning, ServiceError
from orpheus_trio.local.batching import BackgroundBatchingDecoder
from orpheus_trio.local.engine_client import RemoteLM
from orpheus_trio.local.llm import InvalidParameter
from orpheus_trio.local.runaway import (
    AUDIO_TOKENS_PER_SECOND,
    FRAME_S,
    RunawayGuard,
    RunawayLimits,
    audio_budget_s,
    derived_max_tokens,
)
from orpheus_trio.local.synthesizer import LocalSynthesizer
from orpheus_trio.local.tokens import FRAME_SAMPLES
from orpheus_trio.server.engines.orpheus import OrpheusEngine
from orpheus_trio.server.engines.orpheus_remote import NAME

#: Frames of exact repetition that make a loop with the default limits (3 s of audio).
LOOP_FRAMES = 36


def frames_of(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 7)


def cycle(period: int, frames: int, *, seed: int = 1) -> np.ndarray:
    """``frames`` frames repeating a cycle of ``period`` distinct random frames."""
    base = random_frames(period, seed=seed)
    return np.concatenate([base] * (frames // period + 1))[:frames]


# -- the guard, sans-IO ------------------------------------------------------------------


def test_real_time_is_82_audio_tokens_per_second() -> None:
    assert FRAME_S == pytest.approx(2048 / 24000)
    assert AUDIO_TOKENS_PER_SECOND == pytest.approx(82.03, abs=0.01)


def test_one_frame_repeated_is_a_loop_after_exactly_three_seconds() -> None:
    guard = RunawayGuard()
    frames = cycle(1, 100)
    assert guard.feed(frames[: LOOP_FRAMES - 1]) is None
    assert guard.feed(frames[LOOP_FRAMES - 1 :]) == "loop"
    assert guard.frames == LOOP_FRAMES  # frames after the verdict are not looked at
    assert guard.audio_s == pytest.approx(LOOP_FRAMES * FRAME_S)


@pytest.mark.parametrize("period", [2, 3, 7, 16])
def test_a_short_cycle_repeated_is_a_loop_once_it_covers_three_seconds(period: int) -> None:
    guard = RunawayGuard()
    for _ in range(200):
        if guard.feed(cycle(period, 200)[guard.frames : guard.frames + 1]) is not None:
            break
    assert guard.reason == "loop"
    assert guard.frames == max(LOOP_FRAMES, 3 * period)


def test_a_cycle_longer_than_the_window_is_not_looked_for() -> None:
    guard = RunawayGuard(RunawayLimits(max_cycle_frames=16))
    assert guard.feed(cycle(17, 300)) is None


def test_a_cycle_must_come_round_three_times() -> None:
    # A 16-frame cycle covering 36 frames has come round 2.25 times: not yet.
    guard = RunawayGuard(RunawayLimits(loop_s=1.0))
    assert guard.feed(cycle(16, 47)) is None
    assert guard.feed(cycle(16, 48)[47:]) == "loop"


def test_a_slow_drift_never_fires() -> None:
    # Held sounds drifting: each frame keeps the last one's codes but one, and
    # repeats for up to 4 frames, for a minute of audio.
    rows, codes = [], [100, 200, 300, 400, 500, 600, 700]
    for step in range(700):
        if step % 4 == 0:
            codes[step % 7] = (codes[step % 7] + 37) % 4096
        rows.append(list(codes))
    guard = RunawayGuard()
    assert guard.feed(frames_of(rows)) is None and guard.frames == 700


def test_random_speech_like_frames_never_fire() -> None:
    guard = RunawayGuard()
    assert guard.feed(random_frames(2000, seed=5)) is None


def test_audio_past_the_budget_is_too_long() -> None:
    guard = RunawayGuard(RunawayLimits(budget_s=1.0))
    frames = random_frames(40, seed=3)
    assert guard.feed(frames[:11]) is None  # 0.94 s
    assert guard.feed(frames[11:]) == "too_long"
    assert guard.frames == 12


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        RunawayLimits(loop_s=0)
    with pytest.raises(ValueError):
        RunawayLimits(min_cycles=1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("", 4.0),
        ("Hi.", 4.5),  # 2 letters
        ("Hello there, how are you?", 4.0 + 19 * 0.25),
        ("<laugh> ha", 4.0 + 2.0 + 2 * 0.25),
        ("你好，世界。", 4.0 + 4 * 0.6),
        ("안녕하세요", 4.0 + 5 * 0.45),
        ("नमस्ते", 4.0 + 4 * 0.25),  # न म स त: the virama and the vowel sign are marks
        ("¿Qué tal? ¡Bien!", 4.0 + 10 * 0.25),
        ("3,14", 4.0 + 3 * 0.25),
    ],
)
def test_the_text_budget_counts_letters_by_script(text: str, seconds: float) -> None:
    assert audio_budget_s(text) == pytest.approx(seconds)


def test_derived_max_tokens_is_the_budget_in_whole_frames_under_the_ceiling() -> None:
    # "Hello." -> 4 + 5 * 0.25 = 5.25 s -> 62 frames.
    assert derived_max_tokens("Hello.", ceiling=2000) == 62 * 7
    assert derived_max_tokens("word " * 2000, ceiling=2000) == 2000
    assert derived_max_tokens("", ceiling=3) == 7  # at least one frame


# -- on-box ---------------------------------------------------------------------------------


@cache
def looping() -> LocalSynthesizer:
    """The tiny model scripted to repeat a 2-frame phrase forever."""
    return LocalSynthesizer.load(scripted_model_dir(2, loop=True), snac_dir(), device="cpu")


async def test_on_box_a_looping_model_is_ended_and_warned_about() -> None:
    with pytest.warns(RunawaySpeechWarning, match="loop"):
        async with looping().open_stream("hello", max_tokens=4000) as audio:
            pcm = b"".join([piece async for piece in audio])
    assert (audio.finish_reason, audio.runaway, audio.truncated) == ("runaway", "loop", False)
    assert audio.frames == LOOP_FRAMES and len(pcm) == LOOP_FRAMES * FRAME_SAMPLES * 2
    assert audio.tokens < 7 * LOOP_FRAMES + 14  # reading stopped at the verdict


async def test_on_box_runaway_error_asks_for_an_error_instead() -> None:
    chunks = 0
    with pytest.raises(ServiceError) as info:
        async for _ in looping().stream("hello", runaway="error"):
            chunks += 1
    assert info.value.code == "engine_error" and "loop" in info.value.message
    assert chunks > 0  # the audio before the verdict was delivered


async def test_on_box_runaway_off_runs_to_max_tokens() -> None:
    async with looping().open_stream("hello", max_tokens=7 * 50, runaway="off") as audio:
        with pytest.warns(UserWarning, match="max_tokens"):
            frames = len(b"".join([piece async for piece in audio])) // (2 * FRAME_SAMPLES)
    assert (audio.finish_reason, audio.runaway, frames) == ("length", None, 50)


async def test_on_box_a_bad_runaway_mode_is_refused_before_any_work() -> None:
    with pytest.raises(InvalidParameter) as info:
        looping().open("hello", runaway="sometimes")
    assert info.value.key == "runaway" and "'warn'" in info.value.message


async def test_on_box_speech_that_ends_by_itself_is_untouched() -> None:
    synth = LocalSynthesizer.load(scripted_model_dir(6), snac_dir(), device="cpu")
    async with synth.open_stream("hello") as audio:
        pcm = b"".join([piece async for piece in audio])
    assert (audio.finish_reason, audio.runaway) == ("stop", None)
    assert len(pcm) == 6 * FRAME_SAMPLES * 2


# -- the engine worker -----------------------------------------------------------------------


def event(text: str) -> bytes:
    payload = {"choices": [{"text": text, "index": 0, "finish_reason": None}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def never_stopping(requests: list[dict[str, object]], closed: trio.Event) -> Reply:
    """An engine that repeats one 2-frame phrase forever, ignoring max_tokens."""

    async def reply(conn: Conn) -> None:
        requests.append(json.loads(conn.request))
        await conn.send_stream_head()
        try:
            while True:
                for token in audio_script(2):
                    await conn.send_piece(event(custom_token_text(token)))
                if await conn.until_client_closes(0.005):
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        closed.set()

    return reply


async def engine_worker(
    nursery: trio.Nursery, start_server: StartServer
) -> tuple[str, list[dict[str, object]], trio.Event]:
    requests: list[dict[str, object]] = []
    closed = trio.Event()
    engine = RawServer(lambda _: never_stopping(requests, closed))
    await engine.start(nursery)
    # engine="openai": this scripted engine answers completions only (no GET /v1/models to ask).
    lm = RemoteLM(engine.url, engine="openai")
    synthesizer = LocalSynthesizer(lm, BackgroundBatchingDecoder(shared_decoder()))
    server = await start_server(engine=OrpheusEngine(synthesizer, name=NAME))
    return server.base_url, requests, closed


async def test_the_engine_worker_ends_an_endless_engine_and_closes_its_stream(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    base_url, requests, closed = await engine_worker(nursery, start_server)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post("/v1/tts/stream", json={"text": "hello"})
    frames = parse_frames(response.content)
    (metrics,) = [f for f in frames if "finish_reason" in f]
    assert metrics["finish_reason"] == "runaway" and metrics["runaway"] == "loop"
    assert metrics["frames"] == LOOP_FRAMES
    assert frames[-1] == {"type": "eos", "chunks": frames[-1]["chunks"], "samples": LOOP_FRAMES * FRAME_SAMPLES}
    # No max_tokens asked for: the engine was sent the text's own budget.
    assert requests[0]["max_tokens"] == derived_max_tokens("hello", ceiling=2000)
    with trio.fail_after(5):
        await closed.wait()  # the worker closed the engine's stream: the slot is free


async def test_the_client_surfaces_the_guard_as_a_warning(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    base_url, _, _ = await engine_worker(nursery, start_server)
    async with OrpheusTTS(base_url) as tts:
        with pytest.warns(RunawaySpeechWarning, match="loop"):
            async with tts.open_stream("hello") as audio:
                pcm = b"".join([piece async for piece in audio])
    assert audio.runaway == "loop" and len(pcm) == LOOP_FRAMES * FRAME_SAMPLES * 2


async def test_strict_callers_get_an_in_band_error_from_the_worker(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    base_url, _, _ = await engine_worker(nursery, start_server)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post("/v1/tts/stream", json={"text": "hello", "runaway": "error"})
    last = parse_frames(response.content)[-1]
    assert last["type"] == "error" and last["code"] == "engine_error" and "loop" in last["message"]


async def test_the_worker_refuses_a_bad_runaway_mode_with_a_400(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    base_url, requests, _ = await engine_worker(nursery, start_server)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post("/v1/tts/stream", json={"text": "hello", "runaway": 1})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "runaway" and not requests


# -- normal speech never fires -------------------------------------------------------------


NORMAL_TEXTS = [
    "Hi.",
    "Hello there, how are you today?",
    "Wait... what? No, no, no!",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "The quick brown fox jumps over the lazy dog. " * 6,
    "Dr. Smith arrived at 3.30 p.m.; the meeting, however, had already ended. " * 3,
]


@cache
def random_snac_encoder() -> object:
    import snac
    import torch
    from _support_snac import SNAC_24KHZ_CONFIG

    torch.manual_seed(0)
    return snac.SNAC(**SNAC_24KHZ_CONFIG).eval()


async def snac_frames_of_speech(text: str) -> np.ndarray:
    """espeak-ng's real speech for ``text``, encoded to SNAC frames (random-init codec)."""
    import torch

    from orpheus_trio.server.engines.espeak import EspeakEngine

    engine = EspeakEngine()
    pcm = b"".join([p async for p in engine.synthesize(text, None, engine.validate(None, {}))])
    audio = torch.from_numpy(np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768)
    audio = torch.nn.functional.pad(audio[None, None], (0, (-len(audio)) % 4096))
    with torch.inference_mode():
        l0, l1, l2 = (codes[0].numpy() for codes in random_snac_encoder().encode(audio))  # type: ignore[attr-defined]
    order = [l0, l1[0::2], l2[0::4], l2[1::4], l1[1::2], l2[2::4], l2[3::4]]
    return np.stack(order, axis=1).astype(np.int64)


@pytest.mark.parametrize("text", NORMAL_TEXTS)
async def test_normal_speech_of_every_length_never_fires(text: str) -> None:
    frames = await snac_frames_of_speech(text)
    guard = RunawayGuard(RunawayLimits(budget_s=audio_budget_s(text)))
    assert guard.feed(frames) is None and guard.frames == len(frames) > 0



async def test_the_warning_crosses_a_gateway(nursery: trio.Nursery, start_server: StartServer) -> None:
    base_url, _, _ = await engine_worker(nursery, start_server)
    gateway = await start_gateway(nursery, [base_url])
    async with OrpheusTTS(gateway.base_url) as tts:
        with pytest.warns(RunawaySpeechWarning, match="loop"):
            async with tts.open_stream("hello") as audio:
                pcm = b"".join([piece async for piece in audio])
    assert audio.metrics["runaway"] == "loop" and len(pcm) == LOOP_FRAMES * FRAME_SAMPLES * 2
