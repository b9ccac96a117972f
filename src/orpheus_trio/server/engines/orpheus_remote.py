"""The ``orpheus-remote`` engine: the Orpheus LLM on an inference engine, SNAC here.

``orpheus-trio serve --engine orpheus-remote --llm-url URL --snac PATH
[--llm-model NAME] [--llm-api-key KEY] [--tokenizer PATH] [--device cuda]``.

The LLM runs on vLLM, SGLang or llama.cpp's ``llama-server`` (their
OpenAI-compatible ``/v1/completions``, streamed), which batch the sequences of
every stream continuously; this worker turns each stream's tokens into audio
with one :class:`~orpheus_trio.local.batching.BatchingDecoder` shared by all
its streams. It is the on-box ``orpheus`` engine with another token source:
same request parameters (plus ``stop``), same token-error rules, same closing
``metrics`` frame. A request whose client leaves, or whose deadline passes,
closes its HTTP stream to the engine, which aborts the sequence.

The worker asks the engine once which it is and takes token ids from it where
it can send them (see :mod:`~orpheus_trio.local.engine_client`); it ends each
reply at ``max_tokens`` or end of speech itself, whatever the engine does.

Engine faults (:mod:`~orpheus_trio.local.engine_faults`): unreachable or
loading -> 503 ``unavailable`` before any audio (clients fail over), the
engine's 429 -> 429, its 400/413/422 -> 400 ``invalid_request``, anything else
(other statuses, a stream cut short or without a finish reason, garbage, a
first token that is not audio, a reply with no audio) -> 502 ``engine_error``
before audio and an in-band ``engine_error`` after it. Messages are the
worker's own: the engine's text goes to the worker's log, never to a caller.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from ...local.llm import DEFAULT_VOICES
from ...voices import VoiceCatalog
from .orpheus import OrpheusEngine, catalog_from_args

__all__ = ["API_KEY_ENV", "NAME", "add_arguments", "from_args", "load"]

NAME = "orpheus-remote"
#: Read when ``--llm-api-key`` is not given (keeps the key out of ``ps``).
API_KEY_ENV = "ORPHEUS_LLM_API_KEY"


def load(
    llm_url: str,
    snac: str | os.PathLike[str],
    *,
    llm_model: str | None = None,
    llm_api_key: str | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    device: str | None = None,
    voices: Sequence[str] | VoiceCatalog = DEFAULT_VOICES,
    max_batch: int = 64,
    **options: Any,
) -> OrpheusEngine:
    """Load SNAC (blocking) and point the token source at the engine; nothing is sent yet.

    ``options`` go to :class:`~orpheus_trio.local.synthesizer.LocalSynthesizer`.
    """
    from ...local.batching import BackgroundBatchingDecoder
    from ...local.llm import torch_device
    from ...local.engine_client import RemoteLM
    from ...local.snac_decoder import SnacDecoder
    from ...local.synthesizer import LocalSynthesizer

    LocalSynthesizer.check_options(voices=voices, **options)
    lm = RemoteLM(llm_url, model=llm_model, api_key=llm_api_key, tokenizer=tokenizer)
    snac_decoder = SnacDecoder.from_pretrained(snac, device=torch_device(device))
    decoder = BackgroundBatchingDecoder(snac_decoder, max_batch=max_batch)
    synthesizer = LocalSynthesizer(lm, decoder, voices=voices, **options)
    catalog = voices if isinstance(voices, VoiceCatalog) else None
    return OrpheusEngine(synthesizer, name=NAME, catalog=catalog)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options only ``orpheus-remote`` reads (it shares --snac, --tokenizer,
    --device and --voices with the ``orpheus`` engine)."""
    group = parser.add_argument_group("orpheus-remote engine (--engine orpheus-remote)")
    group.add_argument(
        "--llm-url", metavar="URL",
        help="the inference engine's OpenAI-compatible base URL (vllm serve, SGLang, llama-server)",
    )  # fmt: skip
    group.add_argument(
        "--llm-model", metavar="NAME", help="the engine's model name (vLLM and SGLang check it)"
    )
    group.add_argument(
        "--llm-api-key", metavar="KEY", help=f"the engine's API key; default: ${API_KEY_ENV}"
    )


def from_args(args: argparse.Namespace) -> OrpheusEngine:
    """Build the engine from ``serve`` arguments; ``ValueError`` names what is missing."""
    missing = [f for f, v in (("--llm-url", args.llm_url), ("--snac", args.snac)) if not v]
    if missing:
        raise ValueError(f"--engine {NAME} needs {' and '.join(missing)}")
    if args.model:
        raise ValueError(f"--engine {NAME} runs the LLM on --llm-url: drop --model")
    # The checkpoint is the engine's: its family comes from --model-family (or --llm-model,
    # when that is a known hub id).
    voices = catalog_from_args(args, checkpoint=args.llm_model)
    return load(
        args.llm_url,
        args.snac,
        llm_model=args.llm_model,
        llm_api_key=args.llm_api_key or os.environ.get(API_KEY_ENV) or None,
        tokenizer=args.tokenizer,
        device=args.device,
        voices=voices,
    )
