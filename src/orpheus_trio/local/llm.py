"""The Orpheus language model: prompt building, sampling parameters, token generation.

Orpheus is a Llama fine-tune that answers a text prompt with audio tokens.
The prompt is ``128259`` (start of human), the tokenizer's ids of
``"{voice}: {text}"`` (the text alone without a voice), then ``128009`` (end of
text), ``128260`` (end of human), ``128261`` (start of AI) and ``128257``
(start of speech). The text is tokenized exactly once with the tokenizer's own
special tokens: a Llama 3 tokenizer puts its BOS (``128000``) right after
``128259``, as in the reference implementation the checkpoints were trained
with; nothing here adds a second one. Generation stops at ``128258`` (end of
speech) or at one of the model's EOS ids; the stop token is not yielded.

:class:`OrpheusLM` generates on the calling thread (a manual sampling loop over
the KV cache, one token per step) so that the caller decides when to stop:
it simply stops pulling. :mod:`.generation` runs it on a worker thread for Trio.

torch and transformers are imported when a model is loaded, not with this
module, so the CLI and the server's other engines start without them.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .tokens import AUDIO_TOKEN_BASE, CODEBOOK_SIZE, TOKENS_PER_FRAME

if TYPE_CHECKING:
    import torch

    from .generation import ThreadedGenerator

__all__ = [
    "DEFAULT_VOICES",
    "END_OF_AI",
    "END_OF_HUMAN",
    "END_OF_SPEECH",
    "END_OF_TEXT",
    "MIN_STABLE_REPETITION_PENALTY",
    "ORPHEUS_VOCAB_SIZE",
    "cloning_prompt_ids",
    "prompt_ids",
    "spoken_text",
    "PROMPT_SUFFIX",
    "START_OF_AI",
    "START_OF_HUMAN",
    "START_OF_SPEECH",
    "FinishReason",
    "InvalidParameter",
    "OrpheusLM",
    "SamplingParams",
    "sample_token",
    "torch_device",
]

START_OF_HUMAN = 128259
END_OF_TEXT = 128009
END_OF_HUMAN = 128260
START_OF_AI = 128261
START_OF_SPEECH = 128257
END_OF_SPEECH = 128258
END_OF_AI = 128262
PROMPT_SUFFIX = (END_OF_TEXT, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH)
#: The smallest vocabulary holding every audio token (7 codebooks of 4096 after 128266).
ORPHEUS_VOCAB_SIZE = AUDIO_TOKEN_BASE + TOKENS_PER_FRAME * CODEBOOK_SIZE

#: The voices of the Orpheus fine-tuned checkpoints.
DEFAULT_VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")

#: Below this Orpheus tends to loop or babble; allowed, with a warning.
MIN_STABLE_REPETITION_PENALTY = 1.1

#: ``"stop"``: end of speech or EOS; ``"length"``: cut by ``max_tokens``;
#: ``"runaway"``: ended by the runaway guard (:mod:`.runaway`);
#: ``"cancelled"``: the consumer stopped pulling tokens.
FinishReason = Literal["stop", "length", "runaway", "cancelled"]


class InvalidParameter(ValueError):
    """A request parameter (sampling, voice) has a bad type or value, or is unknown."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def _number(
    key: str, value: object, low: float, high: float, *, low_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(key, f"must be a number, got {type(value).__name__}")
    if (
        not math.isfinite(value)
        or value > high
        or value < low
        or (low_open and value == low)
    ):
        bound = "(" if low_open else "["
        raise InvalidParameter(
            key, f"must be in {bound}{low:g}, {high:g}], got {value!r}"
        )
    return float(value)


def _integer(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(key, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidParameter(key, f"must be in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How tokens are drawn. Defaults follow the reference Orpheus engine.

    ``temperature`` 0 means greedy decoding; ``top_k`` 0 and ``top_p`` 1 turn
    those filters off. ``max_tokens`` 2000 is about 24 s of audio (7 tokens
    per 2048-sample frame). ``seed`` makes sampling reproducible.
    """

    temperature: float = 0.6
    top_p: float = 0.8
    top_k: int = 0
    repetition_penalty: float = 1.3
    max_tokens: int = 2000
    seed: int | None = None

    def __post_init__(self) -> None:
        # Checked here, so a SamplingParams built directly is as safe as a request's.
        checked = {
            "temperature": _number("temperature", self.temperature, 0.0, 2.0),
            "top_p": _number("top_p", self.top_p, 0.0, 1.0, low_open=True),
            "top_k": _integer("top_k", self.top_k, 0, 1_000_000),
            "repetition_penalty": _number(
                "repetition_penalty", self.repetition_penalty, 1.0, 3.0
            ),
            "max_tokens": _integer("max_tokens", self.max_tokens, 1, 1_000_000),
            "seed": None
            if self.seed is None
            else _integer("seed", self.seed, 0, 2**63 - 1),
        }
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SamplingParams:
        """Validate request parameters (types, ranges, known keys) into sampling parameters.

        Raises :class:`InvalidParameter` naming the first bad key. A
        repetition penalty below 1.1 is accepted with a ``UserWarning``.
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InvalidParameter(
                unknown[0], f"unknown parameter (known: {', '.join(sorted(known))})"
            )
        # Checked in the order of the fields, whatever the order of the request.
        values = {key: params[key] for key in known if key in params}
        sampling = cls(**values)
        if sampling.repetition_penalty < MIN_STABLE_REPETITION_PENALTY:
            message = (
                f"repetition_penalty {sampling.repetition_penalty:g} is below "
                f"{MIN_STABLE_REPETITION_PENALTY:g}: Orpheus often loops or babbles there"
            )
            warnings.warn(message, UserWarning, stacklevel=2)
        return sampling


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_like_missing_path(where: str | os.PathLike[str]) -> bool:
    """A path that is not there (hub ids are ``owner/name``, never absolute or ``./``).

    ``models/orpheus`` with a local ``models`` directory is a mistyped path too:
    asking the hub for it costs retries and ends in a network error.
    """
    text = str(where)
    path = Path(text).expanduser()
    explicit = (
        isinstance(where, os.PathLike)
        or path.is_absolute()
        or text.startswith((".", "~"))
        or len(path.parts) > 2  # hub ids are `name` or `owner/name`
        or (len(path.parts) == 2 and path.parent.is_dir())  # `models/x`, a local `models`
    )
    return explicit and not path.exists()


#: Files a tokenizer is loaded from (one is enough); a directory with none has no tokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _check_local_checkpoint(
    model: str | os.PathLike[str], tokenizer: str | os.PathLike[str] | None
) -> None:
    """Name what a local checkpoint directory lacks before anything slow is loaded."""
    for what, where in (("model", model), ("tokenizer", tokenizer)):
        if where is not None and _looks_like_missing_path(where):
            raise FileNotFoundError(
                f"Orpheus {what} directory {str(where)!r} does not exist"
            )
    model_dir = Path(model).expanduser()
    if model_dir.is_dir() and not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no config.json in {str(model)!r}: not a transformers checkpoint directory"
        )
    tokenizer_dir = Path(tokenizer if tokenizer is not None else model).expanduser()
    if tokenizer_dir.is_dir() and not any(
        (tokenizer_dir / name).is_file() for name in _TOKENIZER_FILES
    ):
        raise FileNotFoundError(
            f"no tokenizer files in {str(tokenizer_dir)!r} (looked for "
            f"{', '.join(_TOKENIZER_FILES)}): pass the Orpheus tokenizer's directory "
            "or hub id as tokenizer= (serve: --tokenizer)"
        )


def torch_device(device: str | None) -> str:
    """``device`` checked (see :func:`.devices.checked_device`), or the default one."""
    from .devices import checked_device

    if device is None:
        return _default_device()
    return str(checked_device(device))


def _torch_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``dtype`` as a floating-point torch dtype; the device's default when None."""
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    found = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise ValueError(
            f"dtype {dtype!r} is not a floating-point torch dtype "
            "(e.g. float32, float16, bfloat16)"
        )
    return found


def spoken_text(text: str, voice: str | None) -> str:
    """``"{voice}: {text}"`` (the text alone without a voice), checked; ``ValueError`` if bad."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if voice is not None and (not isinstance(voice, str) or not voice.strip()):
        raise ValueError("voice must be a non-empty string or None")
    spoken = f"{voice}: {text}" if voice is not None else text
    try:
        spoken.encode("utf-8")
    except UnicodeEncodeError as error:  # JSON allows "\ud800"; tokenizers do not
        what = "voice" if voice is not None and error.start < len(voice) else "text"
        raise ValueError(
            f"{what} is not valid Unicode: a lone surrogate {spoken[error.start]!r}"
        ) from None
    return spoken


def prompt_ids(
    tokenizer: Any, text: str, voice: str | None, *, vocab_size: int | None = None
) -> list[int]:
    """The token ids Orpheus expects for ``text`` spoken by ``voice`` (see the module docstring)."""
    ids = [int(i) for i in tokenizer(spoken_text(text, voice))["input_ids"]]
    beyond = [i for i in ids if vocab_size is not None and not 0 <= i < vocab_size]
    if beyond:
        raise ValueError(
            f"the tokenizer gave id {beyond[0]}, outside the model's vocabulary "
            f"of {vocab_size}: the tokenizer does not match the model"
        )
    return [START_OF_HUMAN, *ids, *PROMPT_SUFFIX]


def cloning_prompt_ids(
    tokenizer: Any,
    text: str,
    references: Sequence[tuple[str, Sequence[int]]],
    *,
    vocab_size: int | None = None,
) -> list[int]:
    """The prompt that makes the pretrained checkpoint speak ``text`` in the voice of ``references``.

    Each reference is ``(transcript, audio token ids)``: a finished human/AI
    turn, ``START_OF_HUMAN``, the transcript's ids (BOS included, as above),
    ``PROMPT_SUFFIX``, the audio ids, ``END_OF_SPEECH``, ``END_OF_AI``; then the
    target turn, exactly :func:`prompt_ids` without a voice. Zero-shot cloning
    as the pretrained checkpoint (``canopylabs/orpheus-3b-0.1-pretrained``) was
    trained; more references make the voice steadier.
    """
    if not references:
        raise ValueError("cloning needs at least one (transcript, audio) reference")
    ids: list[int] = []
    for transcript, audio in references:
        if not audio:
            raise ValueError("a reference has no audio tokens")
        ids += prompt_ids(tokenizer, transcript, None, vocab_size=vocab_size)
        ids += [int(i) for i in audio]
        ids += [END_OF_SPEECH, END_OF_AI]
    return ids + prompt_ids(tokenizer, text, None, vocab_size=vocab_size)


class OrpheusLM:
    """A loaded Orpheus checkpoint (model + tokenizer) that turns prompts into audio tokens.

    Thread-safety: generations hold their own KV cache, so several may run at
    once on different threads (each costs a forward pass per token).
    """

    params_type: type[SamplingParams] = SamplingParams

    def __init__(self, model: Any, tokenizer: Any, *, device: str) -> None:
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.vocab_size = int(model.config.vocab_size)
        if self.vocab_size < ORPHEUS_VOCAB_SIZE:
            where = getattr(model.config, "name_or_path", "") or "this model"
            raise ValueError(
                f"the model's vocabulary has {self.vocab_size} tokens, Orpheus needs "
                f"{ORPHEUS_VOCAB_SIZE} (its audio tokens end at {ORPHEUS_VOCAB_SIZE - 1}): "
                f"{where} is not an Orpheus checkpoint"
            )
        self.context_length = (
            int(getattr(model.config, "max_position_embeddings", 0)) or None
        )
        self.stop_ids = frozenset({END_OF_SPEECH, *self._eos_ids()})
        # transformers 5 renamed the cache argument; older releases only know the old name.
        accepted = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self._extra_args: dict[str, Any] = {"use_cache": True}
        if "logits_to_keep" in accepted:
            self._extra_args["logits_to_keep"] = (
                1  # the prefill needs the last row only
            )

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str],
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        local_files_only: bool = False,
    ) -> OrpheusLM:
        """Load a checkpoint from a local directory or a hub id.

        ``device`` defaults to CUDA when present, else CPU; ``dtype`` defaults
        to bfloat16 on CUDA and float32 elsewhere. ``tokenizer`` defaults to
        ``model``. A bad device or dtype, a missing directory or a directory
        without ``config.json`` or tokenizer files raise (``ValueError``,
        ``FileNotFoundError``) before anything is loaded; a model whose
        vocabulary cannot hold the audio tokens raises ``ValueError``.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _check_local_checkpoint(model, tokenizer)
        device = torch_device(device)
        torch_dtype = _torch_dtype(dtype, device)
        # The tokenizer first: it loads in a moment, the model may take minutes.
        tok: Any = AutoTokenizer.from_pretrained(
            str(tokenizer if tokenizer is not None else model),
            local_files_only=local_files_only,
        )
        lm: Any = AutoModelForCausalLM.from_pretrained(
            str(model), dtype=torch_dtype, local_files_only=local_files_only
        )
        lm.to(device)
        lm.eval()
        return cls(lm, tok, device=device)

    def _eos_ids(self) -> Iterable[int]:
        found: set[int] = set()
        for source in (
            self.model.config,
            getattr(self.model, "generation_config", None),
        ):
            eos = getattr(source, "eos_token_id", None)
            if isinstance(eos, int):
                found.add(eos)
            elif isinstance(eos, list | tuple):
                found.update(int(e) for e in eos)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            found.add(int(self.tokenizer.eos_token_id))
        return found

    def prompt_ids(self, text: str, voice: str | None = None) -> list[int]:
        """The token ids Orpheus expects for ``text`` spoken by ``voice``."""
        return prompt_ids(self.tokenizer, text, voice, vocab_size=self.vocab_size)

    def open_tokens(
        self, prompt: Sequence[int] | str, params: SamplingParams
    ) -> ThreadedGenerator[int, FinishReason]:
        """:meth:`generate` on a worker thread, consumed from Trio."""
        from .generation import ThreadedGenerator

        if isinstance(prompt, str):
            raise TypeError("OrpheusLM takes prompt token ids, not text")
        self.check_fits(len(prompt), params)
        return ThreadedGenerator(lambda: self.generate(prompt, params), name="orpheus-llm")

    async def aclose(self) -> None:
        """Nothing is held between generations."""

    def check_fits(self, prompt_length: int, params: SamplingParams) -> None:
        """Raise :class:`InvalidParameter` when prompt + ``max_tokens`` exceed the context.

        The key is ``text`` when the prompt leaves no room at all (a smaller
        ``max_tokens`` cannot help), else ``max_tokens``.
        """
        if self.context_length is None:
            return
        room = self.context_length - prompt_length
        if room < 1:
            raise InvalidParameter(
                "text",
                f"too long for the model: the prompt takes {prompt_length} tokens of "
                f"the model's {self.context_length} positions; split it "
                "(stream() splits long text unless split='never')",
            )
        if params.max_tokens > room:
            raise InvalidParameter(
                "max_tokens",
                f"{params.max_tokens} does not fit: the prompt takes {prompt_length} of the "
                f"model's {self.context_length} positions, leaving {room}",
            )

    def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> Generator[int, None, FinishReason]:
        """Yield generated token ids one by one; return why generation ended.

        Nothing runs until the first ``next()``; closing the generator stops
        generation before the next forward pass.
        """
        self.check_fits(len(prompt_ids), params)
        return self._generate(list(prompt_ids), params)

    def _generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> Generator[int, None, FinishReason]:
        import torch
        from transformers import DynamicCache

        rng: torch.Generator | None = None
        if params.seed is not None:
            rng = torch.Generator(device=self.device).manual_seed(params.seed)
        # Prompt and output ids in one preallocated row: the repetition penalty sees both.
        seen = torch.empty(
            (1, len(prompt_ids) + params.max_tokens),
            dtype=torch.long,
            device=self.device,
        )
        seen[0, : len(prompt_ids)] = torch.tensor(prompt_ids, dtype=torch.long)
        length = len(prompt_ids)
        cache = DynamicCache()
        with torch.inference_mode():
            step_input = seen[:, :length]
            for _ in range(params.max_tokens):
                out = self.model(
                    input_ids=step_input, **{self._cache_arg: cache}, **self._extra_args
                )
                token = sample_token(
                    out.logits[0, -1, :], seen[0, :length], params, rng
                )
                if token in self.stop_ids:
                    return "stop"
                seen[0, length] = token
                length += 1
                step_input = seen[:, length - 1 : length]
                yield token
        return "length"


#: Top-p first looks for the nucleus among this many best tokens, and sorts the
#: whole vocabulary only when they hold less than ``top_p`` of the mass.
_NUCLEUS_WINDOW = 256


def sample_token(
    logits: torch.Tensor,
    previous: torch.Tensor,
    params: SamplingParams,
    rng: torch.Generator | None = None,
) -> int:
    """Draw the next token from one row of ``logits`` (which it may overwrite).

    In order, as transformers does it: repetition penalty over ``previous``
    ids (positive logits divided, negative multiplied), then temperature
    (0: greedy), top-k, top-p (the smallest set of best tokens whose
    probability reaches ``top_p``). Sampling draws among the surviving
    candidates only, which keeps a step cheap with a 150k-token vocabulary.
    """
    import torch

    scores = logits.float()  # modified in place below: callers pass a row they discard
    if params.repetition_penalty != 1.0 and previous.numel():
        picked = scores[previous]
        penalty = params.repetition_penalty
        scores[previous] = torch.where(picked < 0, picked * penalty, picked / penalty)
    if params.temperature == 0.0:
        return int(scores.argmax())
    # Shifted so the best score is 0 and the divisor kept within float32: a tiny
    # temperature then leaves the best tokens at 0 and the rest at -inf, never inf/NaN.
    scores.sub_(scores.max()).div_(
        max(params.temperature, torch.finfo(scores.dtype).tiny)
    )
    values: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    if 0 < params.top_k < scores.numel():
        values, ids = torch.topk(scores, params.top_k)
    if params.top_p < 1.0:
        if values is not None and ids is not None:
            total = torch.logsumexp(
                values, dim=0
            )  # top-p acts on the top-k distribution
        else:
            total = torch.logsumexp(scores, dim=0)
            values, ids = torch.topk(scores, min(_NUCLEUS_WINDOW, scores.numel()))
            if float(torch.exp(values - total).sum()) < params.top_p:
                values, ids = torch.sort(scores, descending=True)
        probs = torch.exp(values - total)
        before = torch.cumsum(probs, dim=0) - probs  # mass of the better tokens
        keep = before < params.top_p
        values, ids = values[keep], ids[keep]
    if values is None or ids is None:
        return int(torch.multinomial(torch.softmax(scores, dim=0), 1, generator=rng))
    choice = torch.multinomial(torch.softmax(values, dim=0), 1, generator=rng)
    return int(ids[choice])
