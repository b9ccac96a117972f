"""The espeak-ng engine: real speech at 24 kHz, sentence streaming, voices, thread safety."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from _support_server import StartServer, audio_of, parse_frames

from orpheus_trio.server.engine import InvalidParam
from orpheus_trio.server.engines.espeak import VOICE_MAP, EspeakEngine, _Espeak

TWO_SENTENCES = (
    "The quick brown fox jumps over the lazy dog. Then it runs far away into the woods."
)


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    return EspeakEngine()


async def speak(
    engine: EspeakEngine, text: str, voice: str | None = None, **params: Any
) -> list[bytes]:
    return [
        p
        async for p in engine.synthesize(text, voice, engine.validate(voice, params))
        if isinstance(p, bytes)
    ]


async def test_speech_is_real_and_resampled_to_24k(engine: EspeakEngine) -> None:
    pieces = await speak(engine, "Hello world.")
    samples = np.frombuffer(b"".join(pieces), dtype=np.int16)
    espeak = _Espeak.get()
    with _Espeak.lock:
        native = len(espeak.synthesize("Hello world.", VOICE_MAP["tara"], 175, 50)) // 2
    assert len(samples) == pytest.approx(native * 24_000 / 22_050, abs=50)
    assert 0.5 < len(samples) / 24_000 < 3
    assert samples.std() > 500  # speech, not silence
    assert all(len(p) % 2 == 0 for p in pieces)


async def test_each_sentence_streams_as_soon_as_it_is_made(
    engine: EspeakEngine,
) -> None:
    stream = engine.synthesize(TWO_SENTENCES, None, {})
    first = await stream.__anext__()
    rest = [p async for p in stream]
    assert isinstance(first, bytes) and rest
    one_sentence = b"".join(
        await speak(engine, "The quick brown fox jumps over the lazy dog.")
    )
    # The first piece holds (at most) the first sentence, not the whole text.
    assert len(first) <= len(one_sentence) + 200


async def test_rate_and_pitch_change_the_audio(engine: EspeakEngine) -> None:
    normal = b"".join(await speak(engine, "Testing the speaking rate."))
    fast = b"".join(await speak(engine, "Testing the speaking rate.", rate=350))
    high = b"".join(await speak(engine, "Testing the speaking rate.", pitch=90))
    assert len(fast) < 0.75 * len(normal)
    assert high != normal


def test_voices_and_params_are_validated(engine: EspeakEngine) -> None:
    assert engine.voices() == list(VOICE_MAP)
    with pytest.raises(InvalidParam, match="valid: tara, leah"):
        engine.validate("robot", {})
    with pytest.raises(InvalidParam) as error:
        engine.validate(None, {"rate": 10})
    assert error.value.key == "rate"
    with pytest.raises(InvalidParam, match="unknown parameter; this engine takes: .*pitch, rate"):
        engine.validate(None, {"chunks": 3})
    assert engine.validate("leo", {"temperature": 0.5, "timeout_s": 3.0}) == {
        "temperature": 0.5,
        "timeout_s": 3.0,
    }


async def test_each_voice_selects_its_espeak_voice(
    engine: EspeakEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[str] = []
    real_set_voice = _Espeak.set_voice

    def recording_set_voice(self: _Espeak, name: str) -> bool:
        chosen.append(name)
        return real_set_voice(self, name)

    monkeypatch.setattr(_Espeak, "set_voice", recording_set_voice)
    for voice in ("leo", "zoe", None):
        await speak(engine, "Hi.", voice)
    assert chosen == [VOICE_MAP["leo"], VOICE_MAP["zoe"], VOICE_MAP["tara"]]


async def test_cancellation_takes_effect_after_the_sentence_in_progress(
    engine: EspeakEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentences_made = 0
    second_started = threading.Event()
    real_synthesize = _Espeak.synthesize

    def slow_synthesize(self: _Espeak, *args: Any) -> bytes:
        nonlocal sentences_made
        sentences_made += 1
        if sentences_made == 2:
            second_started.set()
        time.sleep(0.2)  # each sentence takes 0.2 s in its thread
        return real_synthesize(self, *args)

    async def speak_all() -> None:
        async for _ in engine.synthesize(TWO_SENTENCES * 20, None, {}):
            pass

    monkeypatch.setattr(_Espeak, "synthesize", slow_synthesize)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speak_all)
        await trio.to_thread.run_sync(second_started.wait)
        nursery.cancel_scope.cancel()  # while the second sentence is being made
    # The sentence in progress was finished, and no other was started.
    assert sentences_made == 2  # of 40
    await trio.sleep(0.3)
    assert sentences_made == 2
    monkeypatch.undo()
    assert await speak(engine, "Still working.")


async def test_concurrent_requests_over_http_match_sequential_ones(
    start_server: StartServer, engine: EspeakEngine
) -> None:
    server = await start_server(engine, max_concurrency=4)
    texts = [f"Request number {n}. It has two sentences." for n in range(4)]
    expected = [b"".join(await speak(engine, text, "mia")) for text in texts]
    got: dict[int, bytes] = {}
    async with httpx.AsyncClient(base_url=server.base_url) as client:

        async def fetch(n: int) -> None:
            response = await client.post(
                "/v1/tts/stream", json={"text": texts[n], "voice": "mia"}
            )
            frames = parse_frames(response.content)
            assert frames[-1]["type"] == "eos"
            got[n] = b"".join(audio_of(frames))

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(fetch, n)
        unknown = await client.post(
            "/v1/tts/stream", json={"text": "x", "voice": "robot"}
        )
        system = (await client.get("/v1/system")).json()
    # espeak-ng is not bit-exact from call to call (its state carries over), so
    # compare durations and loudness: garbled or interleaved audio would not match.
    for n in range(4):
        assert len(got[n]) == pytest.approx(len(expected[n]), rel=0.05)
        assert np.frombuffer(got[n], dtype=np.int16).std() > 500
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "voice"
    assert (
        "valid: tara, leah, jess, leo, dan, mia, zac, zoe"
        in unknown.json()["error"]["message"]
    )
    assert system["engine"] == "espeak" and system["voices"] == list(VOICE_MAP)
    assert system["emotion_tags"] == []  # espeak-ng performs none
