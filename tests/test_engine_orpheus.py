"""The server's ``orpheus`` engine: a tiny local Orpheus LLM + SNAC behind the v1 contract."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from functools import cache
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from _support_llm import (
    CountingLM,
    counting_lm,
    frame_codes,
    scripted_model_dir,
    snac_dir,
)
from _support_server import StartServer, audio_of, parse_frames

from orpheus_trio.client import OrpheusTTS
from orpheus_trio.local.synthesizer import (
    DEFAULT_VOICES,
    LocalAudioStream,
    LocalSynthesizer,
)
from orpheus_trio.local.tokens import FRAME_SAMPLES, NoAudio
from orpheus_trio.server.engines.orpheus import OrpheusEngine, from_args

#: The endless model tests deadlines and cancellation: the runaway guard would end it first.
NO_GUARD = {"runaway": "off"}

FRAMES = 6


class RecordingSynthesizer(LocalSynthesizer):
    """Keeps every stream it opens, so a test can see what happened to its generation."""

    opened: list[LocalAudioStream]

    def open(self, *args: Any, **kwargs: Any) -> LocalAudioStream:
        audio = super().open(*args, **kwargs)
        self.opened.append(audio)
        return audio


@cache
def scripted_engine() -> OrpheusEngine:
    return OrpheusEngine.load(scripted_model_dir(FRAMES), snac_dir(), device="cpu")


@cache
def looping_synthesizer() -> LocalSynthesizer:
    return LocalSynthesizer.load(
        scripted_model_dir(2, loop=True), snac_dir(), device="cpu", defaults=NO_GUARD
    )


def looping_engine() -> tuple[OrpheusEngine, RecordingSynthesizer, CountingLM]:
    base = looping_synthesizer()
    lm = counting_lm(base.lm, CountingLM)
    recording = RecordingSynthesizer(lm, base.snac)
    recording.opened = []
    return OrpheusEngine(recording), recording, lm


async def assert_generation_stopped(lm: CountingLM) -> None:
    """No generation runs, and no token is made, once the request has ended."""
    with trio.fail_after(5):
        while lm.running:
            await trio.sleep(0.02)
    produced = lm.produced
    await trio.sleep(0.2)
    assert lm.produced == produced < 4000 and lm.running == 0


def expected_samples(frames: int) -> np.ndarray:
    codes = np.array([frame_codes(f) for f in range(frames)], dtype=np.int64)
    return np.frombuffer(
        scripted_engine().synthesizer.snac.decode_pcm(codes), dtype=np.int16
    )


def assert_same_audio(pcm: bytes, frames: int) -> None:
    samples = np.frombuffer(pcm, dtype=np.int16)
    reference = expected_samples(frames)
    assert samples.shape == reference.shape
    assert np.max(np.abs(samples.astype(np.int32) - reference)) <= 1


async def test_server_streams_the_model_speech_with_a_closing_metrics_frame(
    start_server: StartServer,
) -> None:
    server = await start_server(engine=scripted_engine())
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        system = (await client.get("/v1/system")).json()
        response = await client.post(
            "/v1/tts/stream",
            json={"text": "hello world", "voice": "leah", "temperature": 0.7},
        )
    assert system["engine"] == "orpheus"
    assert system["voices"] == list(DEFAULT_VOICES)
    assert system["emotion_tags"] == [
        "<laugh>", "<chuckle>", "<sigh>", "<cough>", "<sniffle>", "<groan>", "<yawn>", "<gasp>",
    ]  # fmt: skip
    assert response.status_code == 200
    frames = parse_frames(response.content)
    chunks = audio_of(frames)
    assert len(chunks) > 1
    assert_same_audio(b"".join(chunks), FRAMES)
    metrics = [f for f in frames if f["type"] == "metrics" and "finish_reason" in f]
    assert len(metrics) == 1
    assert metrics[0]["finish_reason"] == "stop" and metrics[0]["truncated"] is False
    assert metrics[0]["tokens"] == FRAMES * 7 and metrics[0]["frames"] == FRAMES
    assert frames.index(metrics[0]) > max(
        i for i, f in enumerate(frames) if f["type"] == "chunk"
    )
    assert frames[-1] == {
        "type": "eos",
        "chunks": len(chunks),
        "samples": FRAMES * FRAME_SAMPLES,
    }


async def test_reply_cut_by_max_tokens_says_so_before_eos(
    start_server: StartServer,
) -> None:
    server = await start_server(engine=scripted_engine())
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        with pytest.warns(UserWarning, match="max_tokens"):
            response = await client.post(
                "/v1/tts/stream", json={"text": "hi", "max_tokens": 15}
            )
    frames = parse_frames(response.content)
    (engine_metrics,) = [f for f in frames if "finish_reason" in f]
    assert engine_metrics["type"] == "metrics"
    assert (
        engine_metrics["finish_reason"] == "length"
        and engine_metrics["truncated"] is True
    )
    assert engine_metrics["tokens"] == 15 and engine_metrics["dropped_tokens"] == 1
    assert frames[-1]["type"] == "eos" and frames[-1]["samples"] == 2 * FRAME_SAMPLES


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ({"voice": "bob"}, "voice", "unknown voice 'bob'"),
        ({"top_p": 5}, "top_p", r"must be in \(0, 1\]"),
        ({"temperature": "warm"}, "temperature", "must be a number, got str"),
        ({"volume": 11}, "volume", "unknown parameter"),
    ],
)
async def test_bad_params_get_400_invalid_param_naming_the_key(
    start_server: StartServer, body: dict[str, Any], key: str, message: str
) -> None:
    server = await start_server(engine=scripted_engine())
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/tts/stream", json={"text": "hello", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_param"
    assert error["message"].startswith(f"{key}: ")
    assert re.search(message, error["message"])


async def test_max_tokens_beyond_context_is_a_400_before_streaming(
    start_server: StartServer,
) -> None:
    server = await start_server(engine=scripted_engine())
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream", json={"text": "hello", "max_tokens": 9000}
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_param" and error["param"] == "max_tokens"
    assert "does not fit" in error["message"]


async def test_client_disconnect_stops_generation(start_server: StartServer) -> None:
    engine, recording, lm = looping_engine()
    server = await start_server(engine=engine)
    async with (
        httpx.AsyncClient(base_url=server.base_url) as client,
        client.stream(
            "POST", "/v1/tts/stream", json={"text": "hello", "max_tokens": 4000}
        ) as response,
    ):
        async for line in response.aiter_lines():
            if '"chunk"' in line:
                break
    (audio,) = recording.opened
    with trio.fail_after(5):
        while audio.finish_reason is None:
            await trio.sleep(0.02)
    assert audio.finish_reason == "cancelled"
    await assert_generation_stopped(lm)


async def test_server_deadline_stops_generation(start_server: StartServer) -> None:
    engine, recording, lm = looping_engine()
    server = await start_server(engine=engine)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream",
            json={"text": "hello", "max_tokens": 4000, "timeout_s": 0.5},
        )
    frames = parse_frames(response.content)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "deadline_exceeded"
    (audio,) = recording.opened
    assert audio.finish_reason == "cancelled"
    await assert_generation_stopped(lm)


async def test_the_client_library_speaks_to_the_orpheus_engine(
    start_server: StartServer,
) -> None:
    server = await start_server(engine=scripted_engine())
    async with OrpheusTTS(server.base_url) as tts:
        pcm = await tts.synthesize("hello", voice="zoe", top_k=50, seed=3)
    assert_same_audio(pcm, FRAMES)


def _read_base_url(process: subprocess.Popen[str], limit_s: float) -> str:
    assert process.stderr is not None
    give_up = time.monotonic() + limit_s
    seen = []
    while time.monotonic() < give_up:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"orpheus engine on (http://\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"server did not start: {''.join(seen)[-2000:]}")


@pytest.mark.slow
def test_serve_command_runs_the_orpheus_engine() -> None:
    command = [
        sys.executable, "-m", "orpheus_trio", "serve", "--engine", "orpheus",
        "--model", str(scripted_model_dir(FRAMES)), "--snac", str(snac_dir()),
        "--device", "cpu", "--voices", "zoe,tara", "--host", "127.0.0.1", "--port", "0",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        base_url = _read_base_url(process, limit_s=120)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            system = client.get("/v1/system").json()
            response = client.post("/v1/tts/stream", json={"text": "hello"})
        assert system["engine"] == "orpheus" and system["voices"] == ["zoe", "tara"]
        frames = parse_frames(response.content)
        assert frames[-1]["type"] == "eos"
        assert_same_audio(b"".join(audio_of(frames)), FRAMES)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


def test_serve_command_needs_model_and_snac_for_orpheus() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orpheus_trio",
            "serve",
            "--engine",
            "orpheus",
            "--snac",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--engine orpheus needs --model" in result.stderr


def test_serve_command_names_a_bad_dtype_without_a_traceback() -> None:
    command = [
        sys.executable, "-m", "orpheus_trio", "serve", "--engine", "orpheus",
        "--model", str(scripted_model_dir(FRAMES)), "--snac", str(snac_dir()),
        "--device", "cpu", "--dtype", "float33",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2
    assert "dtype 'float33' is not a floating-point torch dtype" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("voices", ["", " , ,"])
def test_an_empty_voice_list_is_refused_before_loading(
    voices: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("loaded the models before checking --voices")

    monkeypatch.setattr(LocalSynthesizer, "load", no_loading)
    args = argparse.Namespace(
        model="model",
        snac="snac",
        tokenizer=None,
        device=None,
        dtype=None,
        voices=voices,
    )
    with pytest.raises(ValueError, match="--voices needs at least one name"):
        from_args(args)


async def test_text_with_a_lone_surrogate_is_a_400_not_a_500(
    start_server: StartServer,
) -> None:
    server = await start_server(engine=scripted_engine())
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream",
            content=b'{"text": "hello \\ud800 world"}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert "lone surrogate" in response.json()["error"]["message"]


async def test_a_model_that_says_nothing_is_an_error_not_an_empty_success(start_server: StartServer) -> None:
    # The model answers every prompt with end of speech at once: no audio at all.
    synthesizer = LocalSynthesizer.load(scripted_model_dir(0), snac_dir(), device="cpu")
    with pytest.raises(NoAudio, match="held no audio"):
        await synthesizer.synthesize("hello", "tara")
    server = await start_server(engine=OrpheusEngine(synthesizer))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        response = await client.post("/v1/tts/stream", json={"text": "hello"})
    assert response.status_code == 502, response.text  # before audio: clients fail over
    error = response.json()["error"]
    assert error["code"] == "engine_error" and "no audio" in error["message"]
