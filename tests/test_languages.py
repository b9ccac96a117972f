"""Languages and voices on every path: workers, OpenAI's API, the gateway, espeak, on-box, the CLI.

Real servers on 127.0.0.1 port 0; the synthetic engine (exact audio) serves any
family's catalog, so a French worker and an English one can sit behind one gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import trio
from _support_gateway import start_gateway, start_worker, wait_until
from _support_server import StartServer, audio_of, parse_frames

from orpheus_trio.client import OrpheusTTS
from orpheus_trio.server.engines.espeak import VOICE_MAP, EspeakEngine
from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream
from orpheus_trio.voices import catalog_for

TEXT = "Hello there."


async def tts(base_url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as http:
        return await http.post(base_url + "/v1/tts/stream", json=body)


async def get_json(base_url: str, path: str) -> Any:
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.get(base_url + path)
    assert response.status_code == 200
    return response.json()


def metrics_voice(body: bytes) -> list[str]:
    return [f["voice"] for f in parse_frames(body) if f["type"] == "metrics" and "voice" in f]


# -- a worker ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "spoke"), [("alloy", "tara"), ("onyx", "leo"), ("zoe", "zoe"), (None, "tara")]
)
async def test_an_alias_speaks_its_voice_and_the_answer_says_which(
    asked: str | None, spoke: str, start_server: StartServer
) -> None:
    server = await start_server(SyntheticEngine())
    response = await tts(server.base_url, {"text": TEXT, "voice": asked})
    assert response.status_code == 200
    assert response.headers["x-voice"] == spoke
    assert metrics_voice(response.content) == [spoke]
    assert b"".join(audio_of(parse_frames(response.content))) == b"".join(
        expected_stream(TEXT, spoke, {})
    )


async def test_an_unknown_voice_is_a_400_listing_voices_and_aliases(
    start_server: StartServer,
) -> None:
    server = await start_server(SyntheticEngine(voice_catalog=catalog_for("fr")))
    response = await tts(server.base_url, {"text": TEXT, "voice": "tara"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_param" and error["param"] == "voice"
    assert error["message"].startswith(
        "voice: unknown voice 'tara'; valid: pierre, amelie, marie; aliases: alloy (pierre), "
    )


async def test_a_non_ascii_voice_is_named_percent_encoded_in_the_header(
    start_server: StartServer,
) -> None:
    server = await start_server(SyntheticEngine(voice_catalog=catalog_for("ko")))
    response = await tts(server.base_url, {"text": "안녕하세요.", "voice": "준서"})
    assert response.status_code == 200
    assert response.headers["x-voice"] == "%EC%A4%80%EC%84%9C"
    assert metrics_voice(response.content) == ["준서"]


async def test_voices_endpoint_and_system_show_languages_kinds_and_aliases(
    start_server: StartServer,
) -> None:
    server = await start_server(SyntheticEngine(voice_catalog=catalog_for("es-it")))
    voices = await get_json(server.base_url, "/v1/voices")
    assert [(v["name"], v["language"], v["kind"], v["engine"]) for v in voices["voices"]] == [
        ("javi", "es", "stock", "synthetic"),
        ("sergio", "es", "stock", "synthetic"),
        ("maria", "es", "stock", "synthetic"),
        ("pietro", "it", "stock", "synthetic"),
        ("giulia", "it", "stock", "synthetic"),
        ("carlo", "it", "stock", "synthetic"),
    ]
    assert voices["voices"][0]["default"] is True
    assert voices["languages"] == ["es", "it"]
    assert voices["aliases"]["alloy"] == "javi"
    system = await get_json(server.base_url, "/v1/system")
    assert system["voices"] == [v["name"] for v in voices["voices"]]
    assert system["languages"] == ["es", "it"]
    assert system["voice_languages"]["giulia"] == "it"
    assert system["voice_aliases"] == voices["aliases"]


async def test_limits_count_characters_of_multibyte_text(start_server: StartServer) -> None:
    server = await start_server(SyntheticEngine(voice_catalog=catalog_for("ko")), max_text_chars=8000)
    # Worst case for the body: astral characters, 12 bytes each as the client's JSON escapes
    # them; 8001 of them still fit the default body limit, so the answer is about characters.
    emoji = "\U0001f600" * 8001
    async with OrpheusTTS(server.base_url) as client:
        body = json.dumps({"text": emoji}).encode()
        assert len(body) < server.config.max_body_bytes
    response = await tts(server.base_url, {"text": emoji})
    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "text has 8001 characters; the limit is 8000"
    )
    response = await tts(server.base_url, {"text": "가", "voice": "유나"})
    assert response.status_code == 200


# -- OpenAI's API, with the real SDK --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["worker", "gateway"])
async def test_the_openai_sdk_with_voice_alloy_just_works(
    kind: str, nursery: trio.Nursery
) -> None:
    worker = await start_worker(nursery, SyntheticEngine())
    base_url = worker.base_url
    if kind == "gateway":
        gateway = await start_gateway(nursery, [worker.base_url])
        await wait_until(lambda: gateway.gateway.engine.catalog() is not None)
        base_url = gateway.base_url
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    async with client.audio.speech.with_streaming_response.create(
        model="orpheus", voice="alloy", input=TEXT, response_format="pcm"
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-voice"] == "tara"
        data = b"".join([piece async for piece in response.iter_bytes()])
    assert data == b"".join(expected_stream(TEXT, "tara", {}))
    with pytest.raises(openai.BadRequestError, match="aliases: alloy \\(tara\\)"):
        await client.audio.speech.create(model="orpheus", voice="bob", input=TEXT)  # type: ignore[arg-type]


# -- the client (what Pipecat's service calls) ----------------------------------------------------


async def test_the_client_learns_which_voice_spoke(start_server: StartServer) -> None:
    server = await start_server(SyntheticEngine())
    async with OrpheusTTS(server.base_url) as client:
        async with client.open_stream(TEXT, "shimmer") as audio:
            pcm = b"".join([piece async for piece in audio])
    assert audio.metrics["voice"] == "jess"
    assert pcm == b"".join(expected_stream(TEXT, "jess", {}))


# -- the gateway routes by language ---------------------------------------------------------------


async def test_the_gateway_sends_each_language_to_a_worker_that_speaks_it(
    nursery: trio.Nursery,
) -> None:
    english = await start_worker(nursery, SyntheticEngine())
    french = await start_worker(nursery, SyntheticEngine(voice_catalog=catalog_for("fr")))
    gateway = await start_gateway(nursery, [english.base_url, french.base_url])
    await wait_until(lambda: gateway.gateway.engine.upstreams.offering("pierre") is not None)
    system = await get_json(gateway.base_url, "/v1/system")
    languages = {u["url"]: u["languages"] for u in system["upstreams"]}
    assert languages == {english.base_url: ["en"], french.base_url: ["fr"]}
    voices = await get_json(gateway.base_url, "/v1/voices")
    by_name = {v["name"]: (v["language"], v["engine"]) for v in voices["voices"]}
    assert by_name["pierre"] == ("fr", "synthetic") and by_name["tara"] == ("en", "synthetic")
    assert voices["languages"] == ["en", "fr"]

    for _ in range(4):  # each time, whichever worker the router would rather pick
        for voice, worker in (("pierre", french), ("marie", french), ("tara", english)):
            before = (english.engine.requests_started, french.engine.requests_started)
            response = await tts(gateway.base_url, {"text": TEXT, "voice": voice})
            assert response.status_code == 200, response.text
            assert response.headers["x-voice"] == voice
            after = (english.engine.requests_started, french.engine.requests_started)
            served = english if after[0] > before[0] else french
            assert served is worker and sum(after) == sum(before) + 1
    # No voice: any worker, and the answer names the default voice of the one that spoke.
    response = await tts(gateway.base_url, {"text": TEXT})
    assert response.headers["x-voice"] in ("tara", "pierre")
    assert set(metrics_voice(response.content)) == {response.headers["x-voice"]}
    # An alias: the first worker's table (English) names the voice, and routes with it.
    response = await tts(gateway.base_url, {"text": TEXT, "voice": "alloy"})
    assert response.headers["x-voice"] == "tara"
    assert set(metrics_voice(response.content)) == {"tara"}  # the gateway's word and the worker's
    # No worker knows it: a worker's 400, listing its voices, reaches the caller.
    response = await tts(gateway.base_url, {"text": TEXT, "voice": "bob"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "voice: no upstream worker offers this voice; voices: tara, "
    )
    assert "; aliases: alloy (tara), " in response.json()["error"]["message"]


# -- espeak speaks every language -----------------------------------------------------------------

SAMPLES = {
    "tara": "Hello, how are you today?",
    "pierre": "Bonjour, comment allez-vous aujourd'hui ?",
    "jana": "Guten Tag, wie geht es Ihnen heute?",
    "유나": "안녕하세요, 오늘 어떻게 지내세요?",
    "ऋतिका": "नमस्ते, आज आप कैसे हैं?",
    "长乐": "你好，你今天好吗？",
    "javi": "Hola, ¿cómo estás hoy?",
    "giulia": "Ciao, come stai oggi?",
}


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


@pytest.mark.parametrize("voice", list(SAMPLES))
async def test_espeak_speaks_each_language_in_its_own_voice(
    voice: str, espeak: EspeakEngine
) -> None:
    language = espeak.catalog().resolve(voice).language  # type: ignore[union-attr]
    assert VOICE_MAP[voice].startswith({"zh": "cmn"}.get(language, language))
    pieces = [
        p async for p in espeak.synthesize(SAMPLES[voice], voice, espeak.validate(voice, {}))
    ]
    samples = np.frombuffer(b"".join(p for p in pieces if isinstance(p, bytes)), np.int16)
    assert len(samples) > 24_000 * 0.5  # real speech: over half a second
    assert np.abs(samples).max() > 3000


def test_espeak_serves_the_voices_asked_for_and_refuses_names_it_lacks() -> None:
    engine = EspeakEngine(["marie", "pierre"], aliases={"alloy": "marie"})
    assert engine.voices() == ["marie", "pierre"]
    assert engine.catalog().languages() == ["fr"]
    assert engine.catalog().resolve("alloy").name == "marie"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="espeak has no voice 'klingon'"):
        EspeakEngine(["klingon"])


# -- on-box -----------------------------------------------------------------------------------------


async def test_on_box_accepts_an_alias_and_prompts_with_the_voice_it_stands_for() -> None:
    from test_local_synth import synth

    synthesizer = synth()
    asked: list[str | None] = []
    prompt_ids = synthesizer.lm.prompt_ids

    def recording(text: str, voice: str | None = None) -> list[int]:
        asked.append(voice)
        return prompt_ids(text, voice)

    synthesizer.lm.prompt_ids = recording  # type: ignore[method-assign]
    try:
        async with synthesizer.open_stream("hello", "nova") as audio:
            assert b"".join([pcm async for pcm in audio])
        with pytest.raises(Exception, match="unknown voice 'bob'; valid: tara.*aliases: alloy"):
            synthesizer.open("hello", "bob")
    finally:
        del synthesizer.lm.prompt_ids
    assert asked == ["mia"]


# -- the command line -------------------------------------------------------------------------------


async def test_serve_takes_a_model_family_and_alias_overrides() -> None:
    command = [
        sys.executable, "-m", "orpheus_trio", "serve", "--engine", "espeak", "--port", "0",
        "--model-family", "ko", "--voice-alias", "alloy=준서", "--no-playground",
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        seen = b""
        with trio.fail_after(60):
            while b"http://" not in seen:
                seen += await process.stderr.receive_some(4096)
        base_url = "http://" + seen.split(b"http://")[1].split()[0].decode()
        voices = await get_json(base_url, "/v1/voices")
        assert [(v["name"], v["language"], v["kind"]) for v in voices["voices"]] == [
            ("유나", "ko", "espeak"),
            ("준서", "ko", "espeak"),
        ]
        assert voices["aliases"]["alloy"] == "준서"
        response = await tts(base_url, {"text": "안녕하세요.", "voice": "alloy"})
        assert response.status_code == 200
        assert metrics_voice(response.content) == ["준서"]
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        assert process.stderr is not None
        await process.stderr.aclose()


def test_serve_refuses_a_bad_alias_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orpheus_trio", "serve", "--engine", "synthetic", "--port", "0",
         "--voice-alias", "alloy=pierre"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "alias alloy=pierre: no voice 'pierre'" in result.stderr
    assert "Traceback" not in result.stderr


# -- Pipecat ----------------------------------------------------------------------------------------


def test_pipecat_with_voice_alloy_speaks_the_voice_it_stands_for(
    threaded_server: Any,
) -> None:
    import asyncio

    from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.tests.utils import SleepFrame, run_test

    from orpheus_trio.integrations.pipecat import OrpheusTTSService

    url = threaded_server()

    async def main() -> list[Any]:
        service = OrpheusTTSService(url=url, voice="alloy", sample_rate=24_000)
        down, _ = await run_test(service, frames_to_send=[TTSSpeakFrame(TEXT), SleepFrame(0.5)])
        return down

    down = asyncio.run(main())
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert audio == b"".join(expected_stream(TEXT, "tara", {}))
    assert audio != b"".join(expected_stream(TEXT, "leo", {}))


def test_speak_takes_a_model_family_and_aliases_for_its_embedded_server(tmp_path: Any) -> None:
    out = tmp_path / "ko.wav"
    base = [sys.executable, "-m", "orpheus_trio", "speak", "--model-family", "ko"]
    ok = subprocess.run(
        [*base, "--voice-alias", "alloy=준서", "--voice", "alloy", "-o", str(out), "안녕하세요."],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert out.stat().st_size > 44 + 24_000  # over half a second of speech
    bad = subprocess.run(
        [*base, "--voice", "tara", "-o", str(out), "안녕하세요."],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "unknown voice 'tara'; valid: 유나, 준서; aliases: alloy (유나)" in bad.stderr
    assert "Traceback" not in bad.stderr
