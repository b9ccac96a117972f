"""On-box synthesis end to end: text -> LLM tokens -> SNAC codes -> PCM, on CPU."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Generator, Sequence
from contextlib import aclosing
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trio
from _support_llm import (
    CountingLM,
    counting_lm,
    frame_codes,
    random_model_dir,
    scripted_model_dir,
    snac_dir,

)

from orpheus_trio.errors import DeadlineExceeded
from orpheus_trio.local.batching import BatchingDecoder
from orpheus_trio.local.llm import (
    FinishReason,
    InvalidParameter,
    OrpheusLM,
    SamplingParams,
)
from orpheus_trio.local.synthesizer import LocalSynthesizer, TruncatedSpeechWarning
from orpheus_trio.local.tokens import FRAME_SAMPLES, InvalidAudioToken

#: The endless model tests deadlines and cancellation: the runaway guard would end it first.
NO_GUARD = {"runaway": "off"}

FRAMES = 6


@cache
def synth() -> LocalSynthesizer:
    return LocalSynthesizer.load(scripted_model_dir(FRAMES), snac_dir(), device="cpu")


@cache
def looping_synth() -> LocalSynthesizer:
    return LocalSynthesizer.load(
        scripted_model_dir(2, loop=True), snac_dir(), device="cpu", defaults=NO_GUARD
    )


def expected_pcm(frames: int) -> np.ndarray:
    """The whole-utterance decode of the scripted codes, as int16 samples."""
    codes = np.array([frame_codes(f) for f in range(frames)], dtype=np.int64)
    return np.frombuffer(synth().snac.decode_pcm(codes), dtype=np.int16)


def assert_same_audio(pcm: bytes, reference: np.ndarray) -> None:
    samples = np.frombuffer(pcm, dtype=np.int16)
    assert samples.shape == reference.shape
    # Streaming windows equal the whole decode up to float rounding (one LSB).
    assert np.max(np.abs(samples.astype(np.int32) - reference)) <= 1
    assert np.any(reference != 0)


async def test_text_becomes_the_scripted_speech_and_stop_token_ends_it() -> None:
    pieces = []
    async with synth().open_stream("hello world", voice="tara") as audio:
        async for pcm in audio:
            assert len(pcm) % 2 == 0 and pcm
            pieces.append(pcm)
    assert len(pieces) > 1  # streamed, not one blob at the end
    assert audio.finish_reason == "stop" and not audio.truncated
    assert audio.tokens == FRAMES * 7
    assert audio.frames == FRAMES
    assert audio.samples == FRAMES * FRAME_SAMPLES
    assert audio.ttfb_s is not None and 0 < audio.ttfb_s <= audio.elapsed_s  # type: ignore[operator]
    assert_same_audio(b"".join(pieces), expected_pcm(FRAMES))


async def test_synthesize_and_stream_give_the_same_audio() -> None:
    whole = await synth().synthesize("the quick fox")
    streamed = b"".join(
        [pcm async for pcm in synth().stream("the quick fox", voice="zoe")]
    )
    assert whole == streamed
    assert_same_audio(whole, expected_pcm(FRAMES))


async def test_a_shared_batching_decoder_gives_the_same_audio() -> None:
    base = synth()
    async with BatchingDecoder(base.snac) as batcher:
        batched = LocalSynthesizer(base.lm, batcher)
        async with trio.open_nursery() as nursery:
            results: list[bytes] = []

            async def one() -> None:
                results.append(await batched.synthesize("hello"))

            for _ in range(3):
                nursery.start_soon(one)
    assert len(results) == 3
    for pcm in results:
        assert_same_audio(pcm, expected_pcm(FRAMES))


async def test_reply_cut_by_max_tokens_is_flagged_and_keeps_whole_frames() -> None:
    with pytest.warns(TruncatedSpeechWarning, match=r"max_tokens \(17\) reached") as caught:
        async with synth().open_stream("hello", max_tokens=17) as audio:
            pcm = b"".join([piece async for piece in audio])
    assert caught[0].filename == __file__  # shown at the caller's line
    assert audio.finish_reason == "length" and audio.truncated
    assert audio.tokens == 17
    assert audio.frames == 2 and audio.dropped_tokens == 3
    reference = np.frombuffer(
        synth().snac.decode_pcm(np.array([frame_codes(0), frame_codes(1)])),
        dtype=np.int16,
    )
    assert_same_audio(pcm, reference)


def counting_synth() -> tuple[LocalSynthesizer, CountingLM]:
    """The looping synthesizer with a model that counts what it generates."""
    lm = counting_lm(looping_synth().lm, CountingLM)
    return LocalSynthesizer(lm, looping_synth().snac, defaults=NO_GUARD), lm


async def assert_generation_stopped(lm: CountingLM, received: int | None) -> None:
    """Nothing runs, and nothing more is generated, once the stream is closed."""
    assert lm.running == 0
    produced = lm.produced
    if received is not None:
        # At most the token buffer and the one in hand ran ahead of the consumer.
        assert received <= produced <= received + 16 + 1
    await trio.sleep(0.2)
    assert lm.produced == produced and lm.running == 0


async def test_closing_early_stops_generation() -> None:
    synth_, lm = counting_synth()
    audio = synth_.open("hello", max_tokens=4000)
    first = await audio.__anext__()
    assert first
    await audio.aclose()
    assert audio.finish_reason == "cancelled"
    await assert_generation_stopped(lm, audio.tokens)
    with pytest.raises(StopAsyncIteration):
        await audio.__anext__()
    await audio.aclose()  # twice is fine


async def test_cancelling_the_consumer_stops_generation() -> None:
    synth_, lm = counting_synth()
    received = 0
    with trio.move_on_after(1.0) as scope:
        async with synth_.open_stream("hello", max_tokens=4000) as audio:
            async for _ in audio:
                received += 1
    assert scope.cancelled_caught and received > 0
    assert audio.finish_reason == "cancelled"
    await assert_generation_stopped(lm, audio.tokens)


async def test_breaking_out_of_stream_stops_generation() -> None:
    synth_, lm = counting_synth()
    async with aclosing(synth_.stream("hello", max_tokens=4000)) as pieces:
        async for _ in pieces:
            break
    assert lm.produced > 0
    await assert_generation_stopped(lm, None)


async def test_deadline_ends_the_stream_with_deadline_exceeded() -> None:
    chunks = 0
    with pytest.raises(DeadlineExceeded, match="local synthesis deadline passed"):
        # Long enough for audio on a loaded machine; the model never stops by itself.
        async for _ in looping_synth().stream("hello", timeout_s=3, max_tokens=4000):
            chunks += 1
    assert chunks > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"voice": "bob"},
            InvalidParameter,
            r"voice: unknown voice 'bob'; valid: tara, leah, .*; aliases: alloy \(tara\)",
        ),
        ({"temperature": -1}, InvalidParameter, r"temperature: must be in \[0, 2\]"),
        ({"top_k": "5"}, InvalidParameter, "top_k: must be an integer, got str"),
        ({"pitch": 3}, InvalidParameter, "pitch: unknown parameter"),
        ({"timeout_s": 0}, InvalidParameter, "timeout_s: must be a positive number"),
        ({"max_tokens": 5000}, InvalidParameter, "max_tokens: 5000 does not fit"),
        ({"text": ""}, ValueError, "text must be a non-empty string"),
    ],
)
async def test_bad_requests_are_rejected_before_any_work(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    text = kwargs.pop("text", "hello")
    with pytest.raises(error, match=message):
        synth().open(text, **kwargs)  # type: ignore[arg-type]


def test_bad_defaults_fail_at_construction() -> None:
    with pytest.raises(InvalidParameter, match="top_p"):
        LocalSynthesizer(synth().lm, synth().snac, defaults={"top_p": 2})


async def test_tokens_out_of_place_raise_a_clear_error() -> None:
    # A random model's first token is practically never a position-0 audio token.
    lm = OrpheusLM.load(random_model_dir(), device="cpu")
    random_synth = LocalSynthesizer(lm, synth().snac)
    with pytest.raises(InvalidAudioToken, match=r"token 0 .*frame 0 position 0"):
        await random_synth.synthesize("hello", max_tokens=50, seed=0)


async def test_orpheus_tts_local_gives_the_client_api_without_a_server() -> None:
    from orpheus_trio.client import OrpheusTTS

    async with OrpheusTTS.local(
        scripted_model_dir(FRAMES), snac_dir(), device="cpu"
    ) as tts:
        assert isinstance(tts, LocalSynthesizer)
        streamed = b"".join([pcm async for pcm in tts.stream("hello", voice="tara")])
        async with tts.open_stream("hello", temperature=0.9, top_k=20) as audio:
            opened = b"".join([pcm async for pcm in audio])
        whole = await tts.synthesize("hello")
    assert streamed == opened == whole
    assert_same_audio(whole, expected_pcm(FRAMES))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
async def test_the_pipeline_runs_on_cuda() -> None:
    cuda = LocalSynthesizer.load(scripted_model_dir(FRAMES), snac_dir(), device="cuda")
    assert cuda.lm.device.type == "cuda"
    async with cuda.open_stream("hello", voice="tara") as audio:
        pcm = b"".join([piece async for piece in audio])
    assert audio.finish_reason == "stop" and audio.tokens == FRAMES * 7
    assert len(pcm) == FRAMES * FRAME_SAMPLES * 2


def llm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "orpheus-llm"]


async def test_breaking_out_of_an_unclosed_stream_stops_its_thread() -> None:
    # The docs ask for `async with`, but a plain `break` must not leave the model
    # thread (and its KV cache) parked until the Trio run ends.
    assert llm_threads() == []
    async for pcm in looping_synth().open("hello", max_tokens=4000):
        assert pcm
        break
    with trio.fail_after(5):
        while llm_threads():
            await trio.sleep(0.02)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_invalid": "ignore"}, "on_invalid must be 'error' or 'resync'"),
        ({"first_hop": 0}, "need 1 <= first_hop <= max_hop"),
        ({"first_hop": 8, "max_hop": 4}, "need 1 <= first_hop <= max_hop"),
        ({"timeout_s": "5"}, "timeout_s must be a positive number or None"),
        ({"timeout_s": True}, "timeout_s must be a positive number or None"),
        ({"voices": "tara"}, "voices must be a collection of names, not a str"),
        ({"defaults": {"top_p": 2}}, "top_p"),
    ],
)
def test_bad_options_fail_at_construction_and_before_loading(
    options: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        LocalSynthesizer(synth().lm, synth().snac, **options)

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("loaded the model before checking the options")

    monkeypatch.setattr(OrpheusLM, "load", no_loading)
    with pytest.raises((ValueError, TypeError), match=message):
        LocalSynthesizer.load(scripted_model_dir(FRAMES), snac_dir(), **options)


def test_a_missing_snac_checkpoint_fails_before_the_llm_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SNAC decoder loads in a moment; an Orpheus checkpoint can take minutes.
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("loaded the LLM before the SNAC decoder")

    monkeypatch.setattr(OrpheusLM, "load", no_loading)
    with pytest.raises(FileNotFoundError, match="nosnac"):
        LocalSynthesizer.load(scripted_model_dir(FRAMES), tmp_path / "nosnac")


class FailingLM(CountingLM):
    """Fails on the worker thread after ``fail_after`` tokens, as a CUDA OOM would."""

    fail_after = 30

    def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> Generator[int, None, FinishReason]:
        tokens = super().generate(prompt_ids, params)

        def failing() -> Generator[int, None, FinishReason]:
            try:
                for _ in range(self.fail_after):
                    yield next(tokens)
                raise RuntimeError("CUDA out of memory (simulated)")
            finally:
                tokens.close()

        return failing()


async def test_a_model_error_mid_stream_reaches_the_consumer_once() -> None:
    lm = counting_lm(looping_synth().lm, FailingLM)
    failing = LocalSynthesizer(lm, looping_synth().snac, defaults=NO_GUARD)
    received = 0
    with pytest.raises(RuntimeError, match=r"^CUDA out of memory \(simulated\)$"):
        async for _ in failing.stream("hello", max_tokens=4000):
            received += 1
    assert received > 0  # audio came first; the error ended the stream, not a hang
    assert lm.running == 0 and lm.produced == FailingLM.fail_after


async def test_closing_from_another_task_raises_closed_resource_in_the_reader() -> None:
    # A "stop" button: one task plays the stream, another closes it. aclose() used to
    # raise "asynchronous generator is already running", and the reader's loop ended
    # as if the speech were complete.
    synth_, lm = counting_synth()
    audio = synth_.open("hello", max_tokens=4000)
    playing = trio.Event()
    outcome: list[BaseException | None] = []

    async def play() -> None:
        try:
            async for _ in audio:
                playing.set()
            outcome.append(None)
        except trio.ClosedResourceError as error:
            outcome.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(play)
        await playing.wait()
        await trio.sleep(0.01)  # the reader is waiting for its next piece
        await audio.aclose()
        assert audio.finish_reason == "cancelled"
        await assert_generation_stopped(lm, None)
    assert len(outcome) == 1 and isinstance(outcome[0], trio.ClosedResourceError)
    with pytest.raises(StopAsyncIteration):
        await audio.__anext__()


async def test_truncation_can_be_made_an_error_for_synthesize() -> None:
    # The documented way to never miss a cut with stream()/synthesize().
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedSpeechWarning)
        with pytest.raises(TruncatedSpeechWarning, match=r"max_tokens \(17\)"):
            await synth().synthesize("hello", max_tokens=17)
