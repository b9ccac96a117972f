"""The local Orpheus LLM: prompts, sampling parameters, generation, thread -> Trio streaming."""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Generator
from functools import cache
from pathlib import Path

import pytest
import torch
import trio
from _support_llm import (
    BOS_ID,
    WORDS,
    audio_script,
    random_model_dir,
    save_tokenizer,
    scripted_model_dir,
)

from orpheus_trio.local.generation import ThreadedGenerator
from orpheus_trio.local.llm import (
    END_OF_SPEECH,
    PROMPT_SUFFIX,
    START_OF_HUMAN,
    InvalidParameter,
    OrpheusLM,
    SamplingParams,
    sample_token,
)

# The same scripted model as the synthesis tests use, so a test run builds it once.
SCRIPT_FRAMES = 6


@cache
def scripted_lm() -> OrpheusLM:
    return OrpheusLM.load(scripted_model_dir(SCRIPT_FRAMES), device="cpu")


@cache
def looping_lm() -> OrpheusLM:
    return OrpheusLM.load(scripted_model_dir(frames=2, loop=True), device="cpu")


@cache
def random_lm() -> OrpheusLM:
    return OrpheusLM.load(random_model_dir(), device="cpu")


def word_id(word: str) -> int:
    return WORDS.index(word) + 2


def run_to_end(generator: Generator[int, None, str]) -> tuple[list[int], str]:
    tokens: list[int] = []
    while True:
        try:
            tokens.append(next(generator))
        except StopIteration as end:
            return tokens, end.value


# --- prompts -------------------------------------------------------------------------


def test_prompt_wraps_voice_and_text_in_orpheus_markers() -> None:
    ids = scripted_lm().prompt_ids("hello world", voice="tara")
    tara, colon, hello, world = (word_id(w) for w in ("tara", ":", "hello", "world"))
    assert ids == [START_OF_HUMAN, BOS_ID, tara, colon, hello, world, *PROMPT_SUFFIX]
    assert PROMPT_SUFFIX == (128009, 128260, 128261, 128257)


def test_prompt_without_voice_is_the_text_alone_with_one_bos() -> None:
    ids = scripted_lm().prompt_ids("the quick fox")
    assert ids == [
        START_OF_HUMAN,
        BOS_ID,
        word_id("the"),
        word_id("quick"),
        word_id("fox"),
        *PROMPT_SUFFIX,
    ]
    assert ids.count(BOS_ID) == 1


@pytest.mark.parametrize("text", ["", "   ", None])
def test_prompt_rejects_empty_text(text: object) -> None:
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        scripted_lm().prompt_ids(text)  # type: ignore[arg-type]


# --- sampling parameters ---------------------------------------------------------------


def test_sampling_defaults_follow_reference_engine() -> None:
    params = SamplingParams.from_params({})
    assert (params.temperature, params.top_p, params.repetition_penalty) == (
        0.6,
        0.8,
        1.3,
    )
    assert params.max_tokens >= 1200


def test_sampling_params_accept_valid_values() -> None:
    params = SamplingParams.from_params(
        {
            "temperature": 0,
            "top_p": 1,
            "top_k": 40,
            "repetition_penalty": 1.5,
            "max_tokens": 7,
            "seed": 3,
        }
    )
    assert params == SamplingParams(0.0, 1.0, 40, 1.5, 7, 3)


@pytest.mark.parametrize(
    ("params", "key", "message"),
    [
        ({"temperature": "hot"}, "temperature", "must be a number, got str"),
        ({"temperature": True}, "temperature", "must be a number, got bool"),
        ({"temperature": 2.5}, "temperature", r"must be in \[0, 2\], got 2.5"),
        ({"temperature": math.nan}, "temperature", "got nan"),
        ({"top_p": 0}, "top_p", r"must be in \(0, 1\], got 0"),
        ({"top_p": 1.01}, "top_p", "got 1.01"),
        ({"top_k": 2.0}, "top_k", "must be an integer, got float"),
        ({"top_k": -1}, "top_k", "got -1"),
        ({"max_tokens": 0}, "max_tokens", r"must be in \[1, "),
        ({"max_tokens": "100"}, "max_tokens", "must be an integer, got str"),
        (
            {"repetition_penalty": 0.9},
            "repetition_penalty",
            r"must be in \[1, 3\], got 0.9",
        ),
        ({"seed": -5}, "seed", "got -5"),
        (
            {"speed": 2, "temperature": 0.5},
            "speed",
            "unknown parameter .known: max_tokens, ",
        ),
    ],
)
def test_sampling_params_reject_bad_values_naming_the_key(
    params: dict[str, object], key: str, message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message) as info:
        SamplingParams.from_params(params)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_low_repetition_penalty_is_accepted_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="repetition_penalty 1.05 is below 1.1"):
        params = SamplingParams.from_params({"repetition_penalty": 1.05})
    assert params.repetition_penalty == 1.05


def test_max_tokens_beyond_the_context_is_rejected_before_generating() -> None:
    lm = scripted_lm()
    prompt = lm.prompt_ids("hello")
    with pytest.raises(
        InvalidParameter,
        match="does not fit: the prompt takes 7 of the model's 4096 positions, leaving 4089",
    ):
        lm.generate(prompt, SamplingParams(max_tokens=4090))


# --- generation ------------------------------------------------------------------------


def test_loading_from_a_saved_directory_gives_a_cpu_model_with_stop_ids() -> None:
    lm = scripted_lm()
    assert lm.device.type == "cpu"
    assert lm.vocab_size >= 128266 + 7 * 4096
    assert END_OF_SPEECH in lm.stop_ids


def test_generation_yields_the_model_reply_and_stops_at_end_of_speech() -> None:
    lm = scripted_lm()
    tokens, reason = run_to_end(
        lm.generate(lm.prompt_ids("hello", "tara"), SamplingParams(seed=0))
    )
    assert tokens == audio_script(SCRIPT_FRAMES)
    assert reason == "stop"
    assert END_OF_SPEECH not in tokens


def test_generation_cut_by_max_tokens_says_length() -> None:
    lm = scripted_lm()
    tokens, reason = run_to_end(
        lm.generate(lm.prompt_ids("hello"), SamplingParams(max_tokens=10))
    )
    assert tokens == audio_script(SCRIPT_FRAMES)[:10]
    assert reason == "length"


def test_same_seed_gives_same_tokens_and_other_seed_differs() -> None:
    lm = random_lm()
    prompt = lm.prompt_ids("hello world")

    def sample(seed: int) -> list[int]:
        return run_to_end(
            lm.generate(prompt, SamplingParams(max_tokens=12, seed=seed, top_p=1.0))
        )[0]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    assert all(0 <= t < lm.vocab_size for t in sample(3))


def test_greedy_decoding_is_deterministic_without_seed() -> None:
    lm = random_lm()
    prompt = lm.prompt_ids("fox")
    params = SamplingParams(temperature=0.0, max_tokens=8)
    assert (
        run_to_end(lm.generate(prompt, params))[0]
        == run_to_end(lm.generate(prompt, params))[0]
    )


# --- thread -> Trio streaming ------------------------------------------------------------


class CountingGeneration:
    """Counts tokens the model actually produced (on the worker thread)."""

    def __init__(self, lm: OrpheusLM, params: SamplingParams) -> None:
        self.lm = lm
        self.params = params
        self.produced = 0
        self.thread: threading.Thread | None = None

    def __call__(self) -> Generator[int, None, str]:
        self.thread = threading.current_thread()
        generation = self.lm.generate(self.lm.prompt_ids("hello"), self.params)
        for token in generation:
            self.produced += 1
            yield token
        return "stop"


async def test_tokens_stream_into_trio_and_result_says_stop() -> None:
    lm = scripted_lm()
    async with ThreadedGenerator(
        lambda: lm.generate(lm.prompt_ids("hi"), SamplingParams())
    ) as tokens:
        received = [t async for t in tokens]
        assert tokens.finished
        assert tokens.result == "stop"
        assert not tokens.stopped_early
    assert received == audio_script(SCRIPT_FRAMES)


async def test_closing_the_stream_stops_generation_promptly() -> None:
    counting = CountingGeneration(looping_lm(), SamplingParams(max_tokens=4000))
    buffer = 4
    tokens = ThreadedGenerator(counting, buffer=buffer)
    received = []
    async for token in tokens:
        received.append(token)
        if len(received) == 5:
            break
    assert received == (audio_script(2) * 2)[:5]
    started = time.monotonic()
    await tokens.aclose()
    assert time.monotonic() - started < 2.0
    assert tokens.finished and tokens.stopped_early
    assert tokens.result is None
    assert counting.thread is not threading.current_thread()
    produced = counting.produced
    # At most the buffer plus the one token in hand when the stop came.
    assert produced <= len(received) + buffer + 1
    await trio.sleep(0.2)
    assert counting.produced == produced
    with pytest.raises(StopAsyncIteration):
        await tokens.__anext__()


async def test_cancelling_the_consumer_stops_generation() -> None:
    counting = CountingGeneration(looping_lm(), SamplingParams(max_tokens=4000))
    received = 0
    with trio.move_on_after(0.5) as scope:
        async with ThreadedGenerator(counting) as tokens:
            async for _ in tokens:
                received += 1
    assert scope.cancelled_caught
    assert received > 0
    assert tokens.finished and tokens.stopped_early
    produced = counting.produced
    await trio.sleep(0.2)
    assert counting.produced == produced < 4000


async def test_generator_errors_reach_the_consumer() -> None:
    def failing() -> Generator[int, None, str]:
        yield 1
        raise RuntimeError("model exploded")

    async with ThreadedGenerator(failing) as tokens:
        assert await tokens.__anext__() == 1
        with pytest.raises(RuntimeError, match="model exploded"):
            await tokens.__anext__()
        assert tokens.result is None


async def test_closing_before_the_first_item_never_starts_the_thread() -> None:
    started = []

    def never() -> Generator[int, None, str]:
        started.append(True)
        yield 1
        return "stop"

    tokens = ThreadedGenerator(never)
    await tokens.aclose()
    with pytest.raises(StopAsyncIteration):
        await tokens.__anext__()
    assert started == []


# --- the sampler ----------------------------------------------------------------------


def draws(
    logits: list[float] | torch.Tensor, params: SamplingParams, n: int = 300
) -> set[int]:
    row = torch.as_tensor(logits, dtype=torch.float32)
    rng = torch.Generator().manual_seed(0)
    return {
        sample_token(row.clone(), torch.empty(0, dtype=torch.long), params, rng)
        for _ in range(n)
    }


def test_greedy_takes_the_best_token_after_the_repetition_penalty() -> None:
    logits = torch.tensor([2.0, 1.5, -1.0, -1.2])
    params = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    # token 0: 2 / 2 = 1 < 1.5; token 2: -1 * 2 = -2 < -1.2
    assert sample_token(logits.clone(), torch.tensor([0, 2, 0]), params) == 1
    assert sample_token(logits.clone(), torch.tensor([], dtype=torch.long), params) == 0


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    params = SamplingParams(temperature=1.0, top_p=0.7)
    assert draws(probs.log(), params) == {0, 1}
    assert draws(probs.log(), SamplingParams(temperature=1.0, top_p=1.0)) == {
        0,
        1,
        2,
        3,
    }


def test_top_p_beyond_the_first_window_sorts_the_whole_vocabulary() -> None:
    logits = torch.linspace(
        0.0, -1.0, 2000
    )  # mild slope: 256 best tokens hold ~16% of the mass
    params = SamplingParams(temperature=1.0, top_p=0.5)
    probs = torch.softmax(logits, 0)
    kept = int(((torch.cumsum(probs, 0) - probs) < 0.5).sum())
    seen = draws(logits, params, n=3000)
    assert max(seen) < kept
    assert max(seen) > 256  # the fallback ran: tokens past the first window were drawn


def test_top_k_limits_the_candidates() -> None:
    logits = [0.0, 0.1, 0.2, 0.3, 0.4]
    assert draws(logits, SamplingParams(temperature=1.0, top_p=1.0, top_k=2)) == {3, 4}
    assert draws(logits, SamplingParams(temperature=1.0, top_p=0.01, top_k=2)) == {4}


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_a_tiny_temperature_is_near_greedy_not_a_crash(temperature: float) -> None:
    # Dividing logits by a temperature this small overflows float32 to inf (and,
    # below float32's range, the divisor itself rounds to 0): softmax gave NaN.
    logits = [0.5, 3.0, -2.0, 2.999, 3.0]
    params = SamplingParams.from_params({"temperature": temperature, "top_p": 1.0})
    assert draws(logits, params, n=50) == {1, 4}  # the tied best tokens only
    params = SamplingParams.from_params({"temperature": temperature, "top_p": 0.3})
    assert draws(logits, params, n=50) <= {1, 4}


# --- loading errors ---------------------------------------------------------------------


def copy_without(tmp_path: Path, *names: str) -> Path:
    """A copy of the scripted checkpoint without the files whose names start with ``names``."""
    copy = tmp_path / "checkpoint"
    shutil.copytree(scripted_model_dir(SCRIPT_FRAMES), copy)
    for file in copy.iterdir():
        if file.name.startswith(names):
            file.unlink()
    return copy


@pytest.mark.parametrize("dtype", ["float33", "cuda", "int8", "Tensor"])
def test_a_bad_dtype_is_named_before_loading(dtype: str) -> None:
    with pytest.raises(ValueError, match=f"dtype {dtype!r} is not a floating-point"):
        OrpheusLM.load(scripted_model_dir(SCRIPT_FRAMES), device="cpu", dtype=dtype)


def test_an_unknown_device_is_named_before_loading() -> None:
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        OrpheusLM.load(scripted_model_dir(SCRIPT_FRAMES), device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="device 'cuda' asked for, .* sees no CUDA device: use device='cpu'"):
        OrpheusLM.load(scripted_model_dir(SCRIPT_FRAMES), device="cuda")


def test_a_checkpoint_without_tokenizer_files_says_to_pass_one(tmp_path: Path) -> None:
    bare = copy_without(tmp_path, "tokenizer", "special_tokens")
    with pytest.raises(FileNotFoundError, match="no tokenizer files in") as info:
        OrpheusLM.load(bare, device="cpu")
    assert str(bare) in str(info.value) and "tokenizer=" in str(info.value)
    lm = OrpheusLM.load(bare, tokenizer=scripted_model_dir(SCRIPT_FRAMES), device="cpu")
    assert lm.prompt_ids("hello")[1] == BOS_ID


def test_a_checkpoint_without_config_is_named(tmp_path: Path) -> None:
    bare = copy_without(tmp_path, "config.json")
    with pytest.raises(FileNotFoundError, match="no config.json in") as info:
        OrpheusLM.load(bare, device="cpu")
    assert str(bare) in str(info.value)


def test_a_model_without_the_orpheus_vocabulary_is_rejected_at_load(
    tmp_path: Path,
) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    save_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocabulary has 1000 tokens") as info:
        OrpheusLM.load(tmp_path, device="cpu")
    assert "not an Orpheus checkpoint" in str(info.value)


def test_a_tokenizer_beyond_the_model_vocabulary_is_named() -> None:
    lm = scripted_lm()
    real = lm.tokenizer

    class Wide:
        eos_token_id = None

        def __call__(self, text: str) -> dict[str, list[int]]:
            return {"input_ids": [*real(text)["input_ids"], lm.vocab_size + 5]}

    mismatched = OrpheusLM(lm.model, Wide(), device="cpu")
    with pytest.raises(ValueError, match="does not match the model"):
        mismatched.prompt_ids("hello")


def test_a_missing_local_path_is_not_looked_up_on_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "models/orpheus" with a local "models" directory is a typo, not a hub id:
    # looking it up on the hub took 25 s of retries and blamed the network.
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'models/orpheus' does not exist"):
        OrpheusLM.load("models/orpheus", device="cpu")
    # Hub ids stay hub ids: `owner/name` with no such local folder, and a bare
    # `name` (its parent is the current folder, which always exists).
    from orpheus_trio.local.llm import _looks_like_missing_path

    assert not _looks_like_missing_path("canopylabs/orpheus-3b-0.1-ft")
    assert not _looks_like_missing_path("orpheus-3b")


def test_a_prompt_that_fills_the_context_blames_the_text_not_max_tokens() -> None:
    lm = scripted_lm()
    prompt = lm.prompt_ids("hello " * 4200)
    with pytest.raises(InvalidParameter, match="too long for the model") as info:
        lm.check_fits(len(prompt), SamplingParams(max_tokens=1))
    assert info.value.key == "text"
    assert f"{len(prompt)} tokens" in str(info.value) and "4096" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"temperature": -0.5}, "temperature"),  # favoured the worst tokens
        ({"top_p": 0.0}, "top_p"),  # would keep no candidate at all
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_k": -3}, "top_k"),
        ({"repetition_penalty": 0.5}, "repetition_penalty"),
        ({"seed": -1}, "seed"),
        ({"temperature": "0.7"}, "temperature"),
    ],
)
def test_sampling_params_built_directly_are_checked_too(
    kwargs: dict[str, object], key: str
) -> None:
    with pytest.raises(InvalidParameter) as info:
        SamplingParams(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key


def test_sampling_params_built_directly_hold_floats() -> None:
    params = SamplingParams(temperature=1, top_p=1, repetition_penalty=2)
    assert params == SamplingParams(1.0, 1.0, 0, 2.0, 2000, None)
    assert isinstance(params.temperature, float) and isinstance(params.top_p, float)


@pytest.mark.parametrize(
    ("text", "voice"), [("hello \ud800 world", None), ("hello", "ta\udcffra")]
)
def test_text_that_is_not_valid_unicode_is_a_value_error(
    text: str, voice: str | None
) -> None:
    # A lone surrogate (legal in JSON as "\ud800") made the tokenizer raise a TypeError.
    with pytest.raises(ValueError, match="lone surrogate"):
        scripted_lm().prompt_ids(text, voice)
