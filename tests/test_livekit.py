"""The LiveKit Agents plugin against the real ``livekit-agents`` TTS base classes, offline.

No LiveKit server: the plugin's streams are consumed directly, on asyncio,
against the reference server on its own thread.
"""

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
from livekit.agents import tts as lk_tts
from livekit.agents._exceptions import APIError

from orpheus_trio import OrpheusTTS
from orpheus_trio.integrations.livekit import TTS
from orpheus_trio.server.engines.synthetic import SyntheticEngine

TEXT = "Hello there, this is Orpheus."
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PARAMS = {"chunks": 6, "chunk_samples": 2400}


FRAME_BYTES = 24_000 * 2 // 5  # LiveKit emits 200 ms frames, the last one padded with silence


def same_audio(got: bytes, expected: bytes) -> bool:
    """``got`` is ``expected`` plus LiveKit's silence padding of its last frame."""
    padding = got[len(expected) :]
    return got.startswith(expected) and not padding.strip(b"\0") and len(padding) < FRAME_BYTES


async def drain(stream: Any) -> tuple[bytes, list[Any]]:
    events = [event async for event in stream]
    return b"".join(bytes(e.frame.data) for e in events), events


def test_synthesize_gives_the_servers_audio_at_24khz_mono(
    threaded_server: Callable[..., str],
) -> None:
    url = threaded_server()

    async def main() -> tuple[bytes, list[Any], bytes]:
        async with OrpheusTTS(url) as client:
            expected = b"".join([c async for c in client.stream(TEXT, **PARAMS)])
        plugin = TTS(url=url, params=PARAMS)
        try:
            async with plugin.synthesize(TEXT) as stream:
                audio, events = await drain(stream)
        finally:
            await plugin.aclose()
        return audio, events, expected

    audio, events, expected = asyncio.run(main())
    assert same_audio(audio, expected)
    assert all(e.frame.sample_rate == 24_000 and e.frame.num_channels == 1 for e in events)
    assert events[-1].is_final


def test_stream_speaks_each_sentence_while_the_rest_is_still_being_written(
    threaded_server: Callable[..., str],
) -> None:
    url = threaded_server()
    tokens = ["Hello", " there.", " How", " are you?"]

    async def reference(client: OrpheusTTS) -> bytes:
        async def source() -> Any:
            for token in tokens:
                yield token

        return b"".join([c async for c in client.stream_text(source())])

    async def main() -> tuple[bytes, bytes, set[str]]:
        async with OrpheusTTS(url) as client:
            stream = TTS(client=client).stream()
            for token in tokens[:3]:
                stream.push_text(token)
            audio = bytearray()
            segments = set()
            async with stream:
                events = stream.__aiter__()
                first = await asyncio.wait_for(events.__anext__(), 10)
                # The first sentence is heard before the LLM has finished the second.
                audio += first.frame.data
                stream.push_text(tokens[3])
                stream.end_input()
                async for event in events:
                    audio += event.frame.data
                    segments.add(event.segment_id)
            return bytes(audio), await reference(client), segments

    audio, expected, segments = asyncio.run(main())
    assert same_audio(audio, expected) and len(segments) == 1


def test_closing_the_stream_mid_speech_cancels_the_request_on_the_server(
    threaded_server: Callable[..., str],
) -> None:
    engine = SyntheticEngine()
    url = threaded_server(engine)
    params = {"chunks": 40, "chunk_samples": 2400, "rtf": 1.0}  # 4 s of speech, paced

    async def main() -> int:
        plugin = TTS(url=url, params=params)
        stream = plugin.stream()
        stream.push_text("A sentence that takes four seconds to say.")
        stream.end_input()
        received = 0
        async for event in stream:
            received += len(event.frame.data)
            break  # the user barged in
        await stream.aclose()
        await plugin.aclose()
        return received

    assert asyncio.run(main()) > 0
    assert engine.requests_started == 1
    for _ in range(100):
        if engine.requests_cancelled:
            break
        asyncio.run(asyncio.sleep(0.02))
    assert engine.requests_cancelled == 1  # the server stopped synthesizing


def test_a_failed_request_is_a_non_retryable_api_error(
    threaded_server: Callable[..., str],
) -> None:
    url = threaded_server()

    async def main() -> None:
        plugin = TTS(url=url, params={"fail_status": 400})
        try:
            async with plugin.synthesize(TEXT) as stream:
                await drain(stream)
        finally:
            await plugin.aclose()

    with pytest.raises(APIError) as error:
        asyncio.run(main())
    assert error.value.retryable is False and "Orpheus TTS failed" in str(error.value)


def test_the_plugin_is_a_livekit_streaming_tts_and_needs_a_url_or_client() -> None:
    assert issubclass(TTS, lk_tts.TTS)
    with pytest.raises(ValueError, match="exactly one of url= or client="):
        TTS()


def test_the_livekit_example_runs_against_a_server(
    threaded_server: Callable[..., str], tmp_path: Path
) -> None:
    url = threaded_server()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "livekit_agent.py"), "agent.wav"],
        cwd=tmp_path,
        capture_output=True,
        env={**os.environ, "ORPHEUS_URLS": url},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    with wave.open(str(tmp_path / "agent.wav")) as wav:
        assert wav.getframerate() == 24_000 and wav.getnframes() > 0
    assert done.stdout.decode().startswith("wrote agent.wav:")
