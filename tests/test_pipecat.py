"""The Pipecat service in Pipecat's own pipeline (``pipecat.tests.utils.run_test``), on asyncio."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import (
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from orpheus_trio import OrpheusTTS
from orpheus_trio.integrations.pipecat import OrpheusTTSService
from orpheus_trio.server.engines.synthetic import SyntheticEngine

TEXT = "Hello there, this is Orpheus."
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def reference_audio(url: str, params: dict[str, Any]) -> bytes:
    async with OrpheusTTS(url) as tts:
        return b"".join([c async for c in tts.stream(TEXT, **params)])


def test_a_speak_frame_becomes_the_servers_audio_between_started_and_stopped(
    threaded_server: Callable[..., str],
) -> None:
    url = threaded_server()
    params = {"chunks": 6, "chunk_samples": 2400}

    async def main() -> tuple[list[Any], bytes]:
        service = OrpheusTTSService(url=url, params=params, sample_rate=24_000)
        down, _ = await run_test(service, frames_to_send=[TTSSpeakFrame(TEXT), SleepFrame(0.5)])
        return down, await reference_audio(url, params)

    down, expected = asyncio.run(main())
    kinds = [type(f) for f in down]
    assert TTSStartedFrame in kinds and TTSStoppedFrame in kinds
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert kinds.index(TTSStartedFrame) < kinds.index(TTSAudioRawFrame)
    assert all(f.sample_rate == 24_000 and f.num_channels == 1 for f in audio)
    assert b"".join(f.audio for f in audio) == expected


def test_an_interruption_cancels_the_request_on_the_server_and_stops_the_audio(
    threaded_server: Callable[..., str],
) -> None:
    engine = SyntheticEngine()
    url = threaded_server(engine)
    # 20 chunks of 100 ms, paced like speech: 2 s; interrupted after 0.3 s.
    params = {"chunks": 20, "chunk_samples": 2400, "rtf": 1.0}

    async def main() -> list[Any]:
        service = OrpheusTTSService(url=url, params=params, sample_rate=24_000)
        down, _ = await run_test(
            service,
            frames_to_send=[TTSSpeakFrame(TEXT), SleepFrame(0.3), InterruptionFrame(), SleepFrame(0.3)],
        )
        return down

    down = asyncio.run(main())
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert 0 < len(audio) < 20 * 2400 * 2 // 2  # some audio, far from all of it
    assert engine.requests_started == 1
    assert engine.requests_cancelled == 1  # the server stopped synthesizing


def test_the_service_needs_a_url_or_a_client() -> None:
    with pytest.raises(ValueError, match="exactly one of url= or client="):
        OrpheusTTSService()


def test_the_pipecat_example_runs_against_a_server(
    threaded_server: Callable[..., str], tmp_path: Path
) -> None:
    url = threaded_server()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "pipecat_agent.py"), "agent.wav"],
        cwd=tmp_path,
        capture_output=True,
        env={**os.environ, "ORPHEUS_URLS": url},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    with wave.open(str(tmp_path / "agent.wav")) as wav:
        assert wav.getframerate() == 24_000 and wav.getnframes() > 0
    out = done.stdout.decode()
    assert out.startswith("wrote agent.wav:")
    # The second line really is cut off: the synthetic engine says 50 ms per character.
    second = float(out.split("line 2: ")[1].split(" s")[0])
    full = len(example("pipecat_agent").SECOND_LINE) * 0.05
    assert 0 < second < full / 2, (second, full)
    assert "NOT_GIVEN" not in done.stderr.decode()


def example(name: str) -> Any:
    sys.path.insert(0, str(EXAMPLES))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(EXAMPLES))


class LaughingEngine(SyntheticEngine):
    def emotion_tags(self) -> list[str]:
        return ["laugh", "chuckle"]


def test_the_example_laughs_only_where_the_service_performs_tags(
    threaded_server: Callable[..., str],
) -> None:
    agent = example("pipecat_agent")
    assert agent.performs_laughter(threaded_server(LaughingEngine())) is True
    assert agent.performs_laughter(threaded_server()) is False  # it would be read out


def test_pipeline_start_logs_no_settings_error_and_the_voice_is_a_setting(
    threaded_server: Callable[..., str],
) -> None:
    from loguru import logger

    url = threaded_server()
    errors: list[str] = []
    sink = logger.add(lambda message: errors.append(str(message)), level="ERROR")
    try:
        service = OrpheusTTSService(url=url, voice="tara", sample_rate=24_000)
        asyncio.run(run_test(service, frames_to_send=[TTSSpeakFrame(TEXT), SleepFrame(0.3)]))
    finally:
        logger.remove(sink)
    assert errors == []
    assert service.voice == "tara"
