"""A cloned voice through llama-server: the prompt it gets, byte-equal audio, its prompt cache.

The tiny scripted Llama is converted to GGUF and served by the real
``llama-server`` (see ``test_engine_llama_server.py``; skipped without it on a
developer's machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support_engine import LlamaServer, running_llama_server, write_gguf
from _support_llm import scripted_model_dir
from _support_snac import shared_decoder, shared_snac_dirs
from _support_voices import reference_wav

from orpheus_trio.local.cloning import encode_voice, reference_token_ids
from orpheus_trio.local.engine_client import RemoteLM
from orpheus_trio.local.llm import OrpheusLM, cloning_prompt_ids, prompt_ids
from orpheus_trio.local.snac_encoder import SnacEncoder
from orpheus_trio.local.synthesizer import LocalSynthesizer
from orpheus_trio.local.tokens import FRAME_SAMPLES
from orpheus_trio.voices.library import VoiceLibrary

FRAMES = 6


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    gguf = write_gguf(scripted_model_dir(FRAMES), tmp_path_factory.mktemp("gguf") / "scripted.gguf")
    with running_llama_server(gguf, slots=2, ctx_per_slot=2048) as server:
        yield server


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> VoiceLibrary:
    encoder = SnacEncoder.from_pretrained(shared_snac_dirs()[0], device="cpu")
    library = VoiceLibrary(tmp_path_factory.mktemp("voices"), snac=encoder.fingerprint)
    pairs = [("hello world", reference_wav(3.0)), ("the quick fox", reference_wav(3.2, 44_100, seed=2))]
    library.add(encode_voice(encoder, "me", pairs))
    return library


def expected_prompt(library: VoiceLibrary, text: str) -> list[int]:
    tokenizer = OrpheusLM.load(scripted_model_dir(FRAMES), device="cpu").tokenizer
    return cloning_prompt_ids(tokenizer, text, reference_token_ids(library.get("me")))


async def speak(lm: Any, library: VoiceLibrary) -> bytes:
    async with LocalSynthesizer(lm, shared_decoder(), voice_library=library, can_clone=True) as synth:
        async with synth.open_stream("brown fox", "me", temperature=0, seed=1) as audio:
            pcm = b"".join([piece async for piece in audio])
        assert audio.finish_reason == "stop"
    return pcm


@pytest.mark.parametrize("prompt", ["token ids", "text"])
async def test_cloned_speech_on_llama_server_equals_the_on_box_path(
    engine: LlamaServer, library: VoiceLibrary, prompt: str
) -> None:
    on_box = await speak(OrpheusLM.load(scripted_model_dir(FRAMES), device="cpu"), library)
    assert len(on_box) == 2 * FRAMES * FRAME_SAMPLES
    tokenizer = scripted_model_dir(FRAMES) if prompt == "token ids" else None
    assert await speak(RemoteLM(engine.url, tokenizer=tokenizer), library) == on_box


async def test_llama_server_received_the_cloning_layout(engine: LlamaServer, library: VoiceLibrary) -> None:
    lm = RemoteLM(engine.url, tokenizer=scripted_model_dir(FRAMES))
    sent: list[dict[str, Any]] = []
    open_stream = lm._open

    async def spy(body, kind):  # type: ignore[no-untyped-def]
        sent.append(dict(body))
        return await open_stream(body, kind)

    lm._open = spy  # type: ignore[method-assign]
    await speak(lm, library)
    expected = expected_prompt(library, "brown fox")
    assert sent[0]["prompt"] == expected and sent[0]["cache_prompt"] is True
    # The engine's own count of the prompt it evaluated (usage.prompt_tokens).
    body = {**sent[0], "stream": False, "max_tokens": 1}
    async with httpx.AsyncClient(timeout=60) as client:
        reply = (await client.post(engine.url + "/v1/completions", json=body)).json()
    assert reply["usage"]["prompt_tokens"] == len(expected)


async def test_the_engine_reuses_the_references_from_its_prompt_cache(
    engine: LlamaServer, library: VoiceLibrary
) -> None:
    first, second = expected_prompt(library, "hello"), expected_prompt(library, "quick brown fox")
    target_turn = prompt_ids(OrpheusLM.load(scripted_model_dir(FRAMES), device="cpu").tokenizer, "hello", None)
    references = len(first) - len(target_turn)
    assert references > 40  # two references (the random SNAC repeats first codes: few frames stay)
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared == references + 2  # then START_OF_HUMAN and BOS of the target turn
    async with httpx.AsyncClient(timeout=60) as client:

        async def evaluated(prompt: list[int], cache: bool) -> dict[str, int]:
            body = {"prompt": prompt, "max_tokens": 1, "temperature": 0, "cache_prompt": cache}
            reply = (await client.post(engine.url + "/v1/completions", json=body)).json()
            return reply["timings"]  # type: ignore[no-any-return]

        await evaluated(first, True)
        cached = await evaluated(second, True)
        uncached = await evaluated(second, False)
    assert cached["prompt_n"] <= len(second) - references  # only the new target turn
    assert uncached["prompt_n"] == len(second)
