"""A tiny random-init Orpheus-shaped Llama and its tokenizer, built and saved for tests.

The vocabulary covers the whole audio token range (128266 + 7 * 4096 ids), with
1 layer and 64 hidden units so it loads and runs in well under a second on CPU.

A random model almost never says "end of speech", so tests that need a known
reply build a *scripted* model: its layers are zeroed (the residual stream is
then just the current token's embedding), each scripted token gets its own
orthonormal embedding direction, and the output head maps that direction to
the next scripted token with a large logit. The real transformers forward pass
and the real sampling loop then produce ``script`` after ``START_OF_SPEECH``,
followed by ``END_OF_SPEECH`` (or, with ``loop=True``, the script again forever).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Generator, Sequence
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

import torch

from orpheus_trio.local.llm import (
    END_OF_SPEECH,
    END_OF_TEXT,
    START_OF_SPEECH,
    FinishReason,
    OrpheusLM,
    SamplingParams,
)
from orpheus_trio.local.tokens import CUSTOM_TOKEN_ID_OFFSET

AUDIO_BASE = 128266
CODEBOOK_SIZE = 4096
VOCAB_SIZE = AUDIO_BASE + 7 * CODEBOOK_SIZE + 2  # 156940
HIDDEN = 64
WORDS = [
    "hello",
    "world",
    "the",
    "quick",
    "brown",
    "fox",
    "tara",
    "leah",
    "zoe",
    "dan",
    ":",
    ",",
    ".",
]
BOS_ID = 1
# Large enough that sampling at any allowed temperature picks the scripted token.
SCRIPT_GAIN = 60.0


def audio_token(position: int, code: int) -> int:
    """The token id of ``code`` at ``position`` (0..6) of a 7-token Orpheus frame."""
    return AUDIO_BASE + position * CODEBOOK_SIZE + code


def custom_token_text(token_id: int) -> str:
    """``<custom_token_N>``: how engines stream token ``token_id`` as text."""
    return f"<custom_token_{token_id - CUSTOM_TOKEN_ID_OFFSET}>"


def frame_codes(frame: int) -> list[int]:
    """Distinct, deterministic codes for frame ``frame`` (one per position)."""
    return [(frame * 613 + position * 97 + 11) % CODEBOOK_SIZE for position in range(7)]


def audio_script(frames: int) -> list[int]:
    """Token ids for ``frames`` whole frames, every token distinct."""
    return [
        audio_token(p, c) for f in range(frames) for p, c in enumerate(frame_codes(f))
    ]


def save_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<s>": BOS_ID, **{w: i + 2 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    # Like Llama 3's tokenizer: BOS is prepended by the tokenizer itself.
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", BOS_ID)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", bos_token="<s>"
    )
    wrapped.save_pretrained(path)


#: The tokenizers a test model can be saved with: the tiny word-level one (no audio
#: entries), or an Orpheus-shaped one with ``<custom_token_N>`` flagged special or not.
TokenizerKind = Literal["tiny", "orpheus-special", "orpheus-plain"]
BEGIN_OF_TEXT = 128000


def save_orpheus_tokenizer(path: Path, *, special: bool) -> None:
    """A Hugging Face tokenizer shaped like Orpheus's: the test words at their usual ids,
    ``<|begin_of_text|>`` (BOS, 128000) and ``<|eot_id|>`` (128009) at their real places,
    and ``<custom_token_N>`` at ``128256 + N`` for the whole audio range, added tokens
    flagged ``special`` (an engine that skips special tokens streams no text for them)
    or not. Control ids (start/end of speech, human, AI) are ``<custom_token_N>`` too,
    as in the real vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    fixed = {BEGIN_OF_TEXT: "<|begin_of_text|>", END_OF_TEXT: "<|eot_id|>"}
    vocab = {"[UNK]": 0, "<s>": BOS_ID, **{w: i + 2 for i, w in enumerate(WORDS)}}
    # The filler up to the audio range lives in the word-level vocabulary (as many added
    # tokens, it takes a minute to build); only what the prompt spells is an added token.
    for i in range(len(vocab), CUSTOM_TOKEN_ID_OFFSET):
        vocab[fixed.get(i, f"<|reserved_special_token_{i}|>")] = i
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.Fuse()  # pieces joined as they are: "<custom_token_1><custom_token_2>"
    core.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in fixed.values()])
    core.add_tokens(
        [
            AddedToken(custom_token_text(i), special=special, normalized=False)
            for i in range(CUSTOM_TOKEN_ID_OFFSET, VOCAB_SIZE)
        ]
    )
    assert core.token_to_id("<|eot_id|>") == END_OF_TEXT
    assert core.token_to_id(custom_token_text(START_OF_SPEECH)) == START_OF_SPEECH
    core.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", BEGIN_OF_TEXT)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
    )
    wrapped.save_pretrained(path)


def save_tiny_orpheus(
    path: Path,
    *,
    script: Sequence[int] | None = None,
    loop: bool = False,
    seed: int = 0,
    tokenizer: TokenizerKind = "tiny",
) -> Path:
    """Build, steer (when ``script`` is given) and save a tiny Orpheus model + tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        bos_token_id=BOS_ID,
        eos_token_id=END_OF_TEXT,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    if script is not None:
        _steer(model, list(script), loop=loop)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    if tokenizer == "tiny":
        save_tokenizer(path)
    else:
        save_orpheus_tokenizer(path, special=tokenizer == "orpheus-special")
    return path


def _steer(model: torch.nn.Module, script: list[int], *, loop: bool) -> None:
    states = [START_OF_SPEECH, *script]
    if len(set(states)) != len(states) or len(states) > HIDDEN:
        raise ValueError(f"script needs {HIDDEN} or fewer distinct tokens")
    successors = [*script, script[0] if loop else END_OF_SPEECH]
    directions = torch.linalg.qr(torch.randn(HIDDEN, HIDDEN)).Q.T  # orthonormal rows
    inner: torch.nn.Module = model.model  # type: ignore[assignment]
    head: torch.nn.Linear = model.lm_head  # type: ignore[assignment]
    with torch.no_grad():
        for layer in inner.layers:  # type: ignore[union-attr]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head.weight.zero_()
        for i, (token, successor) in enumerate(zip(states, successors, strict=True)):
            inner.embed_tokens.weight[token] = directions[i]  # type: ignore[union-attr, index]
            head.weight[successor] += SCRIPT_GAIN * directions[i]


@cache
def _scratch() -> Path:
    root = Path(tempfile.mkdtemp(prefix="orpheus-tiny-llm-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@cache
def scripted_model_dir(frames: int = 4, loop: bool = False, tokenizer: TokenizerKind = "tiny") -> Path:
    """A saved model that answers every prompt with ``audio_script(frames)`` then
    stops (or, with ``loop``, repeats it forever). Built once per test session."""
    name = f"scripted-{frames}{'-loop' if loop else ''}-{tokenizer}"
    return save_tiny_orpheus(
        _scratch() / name, script=audio_script(frames), loop=loop, tokenizer=tokenizer
    )


@cache
def random_model_dir() -> Path:
    """A saved model with random weights (random tokens, practically never a stop)."""
    return save_tiny_orpheus(_scratch() / "random")


@cache
def snac_dir() -> Path:
    """The shared random-init 24 kHz SNAC (safetensors form), saved once per session."""
    from _support_snac import save_random_snac

    return save_random_snac(_scratch() / "snac")[1]


def counting_lm(lm: OrpheusLM, kind: type[Counting]) -> Counting:
    """``lm`` (shared weights) as a ``kind`` (:class:`CountingLM` or a subclass),
    counting the tokens it generates, on whichever thread."""
    counting = kind.__new__(kind)
    counting.__dict__.update(lm.__dict__)
    counting.produced = 0
    counting.running = 0
    return counting


Counting = TypeVar("Counting", bound="CountingLM")


class CountingLM(OrpheusLM):
    """Counts tokens generated and generations still running: what a consumer that
    stopped must no longer cause (the stream's own counters only see what it received)."""

    produced: int
    running: int

    def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> Generator[int, None, FinishReason]:
        inner = super().generate(prompt_ids, params)
        return self._count(inner)

    def _count(
        self, inner: Generator[int, None, FinishReason]
    ) -> Generator[int, None, FinishReason]:
        self.running += 1
        try:
            while True:
                try:
                    token = next(inner)
                except StopIteration as end:
                    reason: FinishReason = end.value
                    return reason
                self.produced += 1
                yield token
        finally:
            inner.close()
            self.running -= 1
