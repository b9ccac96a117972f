"""Cloned voices on the synthesis paths: reference audio in, cloning prompts out.

:func:`encode_voice` turns (transcript, audio file) pairs into a
:class:`~orpheus_trio.voices.library.CustomVoice` with a :class:`~.snac_encoder.SnacEncoder`.
:func:`cloning_prompt` builds a voice's prompt for any token model: token ids
through :func:`~.llm.cloning_prompt_ids` where a tokenizer is at hand (the
on-box LLM; an engine client given ``--tokenizer``), else the same prompt
spelled as text for the engine to tokenize. Repeated frames are dropped from
the reference codes here, as the training data was prepared
(:func:`~.snac_encoder.drop_repeated_frames`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..voices.library import CustomVoice, Reference
from .engine_client import text_prompt
from .llm import END_OF_AI, END_OF_SPEECH, cloning_prompt_ids
from .snac_encoder import SnacEncoder, drop_repeated_frames, prepare_reference
from .token_source import Prompt, TokenModel
from .tokens import CUSTOM_TOKEN_ID_OFFSET, token_ids_from_codes

__all__ = ["cloning_prompt", "cloning_text_prompt", "encode_voice", "reference_token_ids"]

AudioInput = bytes | str | os.PathLike[str]


def encode_voice(
    encoder: SnacEncoder, name: str, pairs: Sequence[tuple[str, AudioInput]]
) -> CustomVoice:
    """A voice from ``(transcript, audio)`` pairs: every clip checked, then encoded in one batch.

    Raises :class:`~.snac_encoder.ReferenceAudioError` naming the bad clip.
    """
    if not pairs:
        raise ValueError("a voice needs at least one (transcript, audio) pair")
    prepared = []
    for index, (_, audio) in enumerate(pairs, start=1):
        try:
            prepared.append(prepare_reference(audio))
        except ValueError as error:
            what = f"reference {index}" if len(pairs) > 1 else "the reference"
            raise type(error)(f"{what}: {error}") from None
    frames = encoder.encode_batch([p.samples for p in prepared])
    references = tuple(
        Reference(text, codes, len(p.samples), p.source_rate)
        for (text, _), codes, p in zip(pairs, frames, prepared, strict=True)
    )
    return CustomVoice(name, references, encoder.fingerprint)


def reference_token_ids(voice: CustomVoice) -> list[tuple[str, list[int]]]:
    """Each reference as (transcript, audio token ids), repeated frames dropped."""
    return [(r.text, token_ids_from_codes(drop_repeated_frames(r.frames))) for r in voice.references]


def cloning_text_prompt(text: str, references: Sequence[tuple[str, Sequence[int]]]) -> str:
    """:func:`~.llm.cloning_prompt_ids` spelled as text, for an engine that tokenizes itself."""
    parts = []
    for transcript, audio in references:
        parts.append(text_prompt(transcript))
        parts.append("".join(f"<custom_token_{int(i) - CUSTOM_TOKEN_ID_OFFSET}>" for i in audio))
        parts.append(
            f"<custom_token_{END_OF_SPEECH - CUSTOM_TOKEN_ID_OFFSET}>"
            f"<custom_token_{END_OF_AI - CUSTOM_TOKEN_ID_OFFSET}>"
        )
    return "".join(parts) + text_prompt(text)


def cloning_prompt(lm: TokenModel, text: str, voice: CustomVoice) -> Prompt:
    """The prompt that speaks ``text`` in ``voice`` on ``lm`` (ids with a tokenizer, else text)."""
    references = reference_token_ids(voice)
    # Both token models keep their tokenizer here (RemoteLM's may be None).
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None:
        return cloning_text_prompt(text, references)
    return cloning_prompt_ids(tokenizer, text, references, vocab_size=getattr(lm, "vocab_size", None))
