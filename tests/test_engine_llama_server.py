"""The ``orpheus-remote`` engine against a real inference engine: llama.cpp's ``llama-server``.

The tiny scripted Orpheus Llama (``_support_llm``) is converted to GGUF by the
test and served by ``llama-server`` (built by ``scripts/build-llama-server.sh``;
the tests skip without it on a developer's machine and fail under
``scripts/test.sh``). The audio is checked byte for byte against the on-box
path (the same checkpoint through ``transformers``, the same SNAC decoder),
and cancellation is measured from the engine itself: its ``/slots`` and
``/metrics`` say when it stopped generating.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
from _support_cli import orpheus_trio
from _support_engine import LlamaServer, running_llama_server, write_gguf
from _support_llm import scripted_model_dir, snac_dir
from _support_server import StartServer, audio_of, parse_frames
from _support_snac import InstantDecoder, shared_decoder

from orpheus_trio.audio import read_wav
from orpheus_trio.client import OrpheusTTS
from orpheus_trio.local.batching import BackgroundBatchingDecoder
from orpheus_trio.local.llm import OrpheusLM
from orpheus_trio.local.engine_client import RemoteLM, RemoteTokens
from orpheus_trio.local.synthesizer import LocalSynthesizer, TruncatedSpeechWarning
from orpheus_trio.local.tokens import FRAME_SAMPLES
from orpheus_trio.server.engines.orpheus import OrpheusEngine

FRAMES = 6
SLOTS = 4


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def speech_engine(gguf_dir: Path) -> Iterator[LlamaServer]:
    """llama-server with the model that says ``FRAMES`` frames, then end of speech."""
    gguf = write_gguf(scripted_model_dir(FRAMES), gguf_dir / "scripted.gguf")
    with running_llama_server(gguf, slots=SLOTS) as server:
        yield server


@pytest.fixture(scope="module")
def endless_engine(gguf_dir: Path) -> Iterator[LlamaServer]:
    """llama-server with a model that never stops speaking (until max_tokens)."""
    gguf = write_gguf(scripted_model_dir(2, loop=True), gguf_dir / "loop.gguf")
    with running_llama_server(gguf, slots=SLOTS, ctx_per_slot=4096) as server:
        yield server


def on_box_pcm() -> bytes:
    """The on-box path: the same checkpoint through transformers, greedy."""
    lm = OrpheusLM.load(scripted_model_dir(FRAMES), device="cpu")
    synthesizer = LocalSynthesizer(lm, shared_decoder())
    return trio.run(lambda: synthesizer.synthesize("hello world", "tara", temperature=0))


def snr_db(pcm: bytes, reference: bytes) -> float:
    signal = np.frombuffer(reference, dtype=np.int16).astype(np.float64)
    noise = np.frombuffer(pcm, dtype=np.int16).astype(np.float64) - signal
    return math.inf if not noise.any() else 10 * math.log10((signal**2).sum() / (noise**2).sum())


def assert_same_audio(pcm: bytes, reference: bytes) -> None:
    """Byte for byte, or (windows batched with other streams' round differently) >= 60 dB."""
    assert len(pcm) == len(reference)
    assert pcm == reference or snr_db(pcm, reference) >= 60


def remote_engine(url: str, **options: object) -> OrpheusEngine:
    lm = RemoteLM(url, **options)  # type: ignore[arg-type]
    return OrpheusEngine(
        LocalSynthesizer(lm, BackgroundBatchingDecoder(shared_decoder())), name="orpheus-remote"
    )


@pytest.fixture(scope="module")
def reference() -> bytes:
    pcm = on_box_pcm()
    assert len(pcm) == 2 * FRAMES * FRAME_SAMPLES
    return pcm


@pytest.mark.parametrize("prompt", ["text", "token ids"])
async def test_llama_server_speech_equals_the_on_box_path_byte_for_byte(
    speech_engine: LlamaServer, reference: bytes, prompt: str
) -> None:
    tokenizer = scripted_model_dir(FRAMES) if prompt == "token ids" else None
    async with LocalSynthesizer(RemoteLM(speech_engine.url, tokenizer=tokenizer), shared_decoder()) as synth:
        async with synth.open_stream("hello world", "tara", temperature=0, seed=1) as audio:
            pcm = b"".join([piece async for piece in audio])
    assert pcm == reference
    assert audio.finish_reason == "stop" and audio.tokens >= FRAMES


async def test_the_engine_samples_with_only_the_samplers_the_request_turns_on(endless_engine: LlamaServer) -> None:
    # llama-server's defaults would add top_k 40 and min_p 0.05: its own /slots says what it applies.
    async with LocalSynthesizer(RemoteLM(endless_engine.url), shared_decoder()) as synth:
        chains = {0: ["penalties", "temperature", "top_p"], 30: ["penalties", "temperature", "top_k", "top_p"]}
        for top_k, chain in chains.items():
            async with synth.open_stream("hello", top_k=top_k, max_tokens=16_000, runaway="off") as audio:
                await audio.__anext__()
                slots = await trio.to_thread.run_sync(endless_engine.get_json, "/slots")
            (running,) = [s["params"] for s in slots if s.get("is_processing")]
            assert running["samplers"] == chain
            assert running["top_p"] == pytest.approx(0.8) and running["repeat_penalty"] == pytest.approx(1.3)
            await wait_idle(endless_engine)


async def test_paced_reads_take_the_engine_s_tokens_in_bigger_pieces_with_the_same_audio(
    endless_engine: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def speak() -> tuple[bytes, RemoteTokens]:
        lm = RemoteLM(endless_engine.url)
        opened: list[RemoteTokens] = []
        open_tokens = lm.open_tokens
        monkeypatch.setattr(lm, "open_tokens", lambda *a: opened.append(open_tokens(*a)) or opened[-1])
        # A decoder that takes no time, so reads are not coalesced by waiting for the SNAC decode.
        async with LocalSynthesizer(lm, InstantDecoder(shared_decoder())) as synth:  # type: ignore[arg-type]
            with pytest.warns(TruncatedSpeechWarning):
                pcm = await synth.synthesize("hello", "tara", temperature=0, seed=1, max_tokens=7 * 90, runaway="off")
        return pcm, opened[0]

    paced_pcm, paced = await speak()
    monkeypatch.setattr(RemoteTokens, "reads_can_wait", False)
    plain_pcm, plain = await speak()
    assert paced_pcm == plain_pcm and len(plain_pcm) == 2 * 90 * FRAME_SAMPLES
    assert paced.items == plain.items == 7 * 90
    # The engine writes each token on its own; read as they come, that is a read per token.
    assert plain.reads >= 0.9 * plain.items
    assert paced.reads <= 0.6 * plain.reads


async def test_concurrent_streams_through_the_worker_share_one_snac_batcher(
    speech_engine: LlamaServer, reference: bytes, start_server: StartServer
) -> None:
    engine = remote_engine(speech_engine.url)
    server = await start_server(engine=engine)
    results: list[bytes] = []
    async with OrpheusTTS([server.base_url], hedge_ttfb_ms=None) as client:

        async def one() -> None:
            results.append(await client.synthesize("hello world", "tara", temperature=0))

        async with trio.open_nursery() as nursery:
            for _ in range(SLOTS * 2):
                nursery.start_soon(one)
    assert len(results) == SLOTS * 2
    for pcm in results:
        assert_same_audio(pcm, reference)
    decoder = engine.synthesizer.decoder
    assert isinstance(decoder, BackgroundBatchingDecoder) and decoder.current is not None
    # One batcher for all streams: some of its decode calls carried several streams' windows.
    assert decoder.current.batches_run < decoder.current.windows_decoded


async def busy(engine: LlamaServer) -> int:
    return await trio.to_thread.run_sync(engine.busy_slots)


async def wait_idle(engine: LlamaServer, within_s: float = 3.0) -> float:
    """Seconds until the engine reports no slot generating."""
    start = trio.current_time()
    with trio.fail_after(within_s):
        while await busy(engine):
            await trio.sleep(0.02)
    return trio.current_time() - start


@pytest.mark.parametrize("how", ["disconnect", "deadline"])
async def test_caller_leaving_or_deadline_frees_the_engine_slot(
    endless_engine: LlamaServer, start_server: StartServer, how: str
) -> None:
    server = await start_server(engine=remote_engine(endless_engine.url))
    before = await trio.to_thread.run_sync(endless_engine.metric, "tokens_predicted_total")
    request = {"text": "hello", "max_tokens": 16_000, "runaway": "off"}
    if how == "deadline":
        request["timeout_s"] = 1.5
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        async with client.stream("POST", "/v1/tts/stream", json=request) as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if '"chunk"' in line and len(lines) == 3:
                    assert await busy(endless_engine) == 1  # generating for us right now
                if how == "disconnect" and len(lines) == 4:
                    break
    if how == "deadline":
        assert json.loads(lines[-1])["code"] == "deadline_exceeded"
    await wait_idle(endless_engine)
    # And it stays idle: nothing is generated for a request nobody waits for.
    predicted = await trio.to_thread.run_sync(endless_engine.metric, "tokens_predicted_total")
    await trio.sleep(0.3)
    assert await busy(endless_engine) == 0
    assert predicted - before < 16_000
    assert predicted == await trio.to_thread.run_sync(endless_engine.metric, "tokens_predicted_total")


async def test_hedge_loser_frees_its_engine_slot(endless_engine: LlamaServer, start_server: StartServer) -> None:
    workers = [await start_server(engine=remote_engine(endless_engine.url)) for _ in range(2)]
    # A hedge at 1 ms: both workers start a sequence on the engine; the first audio wins.
    async with OrpheusTTS([w.base_url for w in workers], hedge_ttfb_ms=1) as client:
        async with client.open_stream("hello", max_tokens=16_000, runaway="off") as audio:
            chunks = 0
            async for _ in audio:
                chunks += 1
                if chunks == 8:
                    # The loser's stream was closed when the winner's audio came: one slot left.
                    with trio.fail_after(3):
                        while await busy(endless_engine) != 1:
                            await trio.sleep(0.02)
                    break
    await wait_idle(endless_engine)


async def test_engine_refusing_a_prompt_is_a_clean_400_before_audio(
    speech_engine: LlamaServer, start_server: StartServer
) -> None:
    server = await start_server(engine=remote_engine(speech_engine.url))
    # A prompt longer than the slot's context: llama-server refuses it; the worker passes that on.
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        response = await client.post("/v1/tts/stream", json={"text": "hello " * 400})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "(400)" in error["message"]


async def test_local_synthesis_can_take_its_tokens_from_the_engine(
    speech_engine: LlamaServer, reference: bytes
) -> None:
    synth = OrpheusTTS.local(None, snac_dir(), device="cpu", llm_url=speech_engine.url + "/v1")
    async with synth:
        pcm = await synth.synthesize("hello world", "tara", temperature=0)
    assert_same_audio(pcm, reference)


async def test_cli_speak_and_batch_with_llm_url(speech_engine: LlamaServer, reference: bytes, tmp_path: Path) -> None:
    flags = ["--llm-url", speech_engine.url, "--snac", snac_dir(), "--device", "cpu", "--temperature", "0"]
    done = await orpheus_trio("speak", "Hello there.", "-o", tmp_path / "one.wav", *flags)
    assert done.returncode == 0, done.stderr.decode()
    assert "(embedded orpheus-remote server)" in done.stderr.decode()
    assert_same_audio(read_wav(tmp_path / "one.wav").pcm, reference)
    source = tmp_path / "lines.txt"
    source.write_text("First line.\nSecond line.\nThird line.\n")
    done = await orpheus_trio("batch", source, "--out-dir", tmp_path / "out", "--no-progress", *flags)
    assert done.returncode == 0, done.stderr.decode()
    for name in ("0001.wav", "0002.wav", "0003.wav"):
        assert_same_audio(read_wav(tmp_path / "out" / name).pcm, reference)
