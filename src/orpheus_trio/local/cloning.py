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
import threading
from collections.abc import Collection, Sequence

from ..voices.library import CustomVoice, Reference, VoiceExists, VoiceLibrary, check_voice_name
from .engine_client import text_prompt
from .llm import END_OF_AI, END_OF_SPEECH, cloning_prompt_ids
from .snac_encoder import SnacEncoder, drop_repeated_frames, prepare_reference
from .token_source import Prompt, TokenModel
from .tokens import CUSTOM_TOKEN_ID_OFFSET, token_ids_from_codes

__all__ = [
    "VoiceCloner",
    "cloning_prompt", "cloning_text_prompt", "encode_voice", "reference_token_ids"]

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


class VoiceCloner:
    """A served voice library and the SNAC encoder that adds voices to it.

    The encoder is loaded from ``snac`` (the decoder's checkpoint) on the first
    add, not at start: a server that only speaks custom voices never needs it.
    ``admin_keys``: the keys that may add and remove voices (see
    :mod:`orpheus_trio.server.voice_upload`).
    """

    def __init__(
        self,
        library: VoiceLibrary,
        snac: str | os.PathLike[str],
        *,
        device: str | None = None,
        admin_keys: Sequence[str] = (),
    ) -> None:
        self.library = library
        self.admin_keys = tuple(admin_keys)
        self._snac = snac
        self._device = device
        self._encoder: SnacEncoder | None = None
        self._lock = threading.Lock()

    def encoder(self) -> SnacEncoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = SnacEncoder.from_pretrained(self._snac, device=self._device)
                if self.library.snac is not None and self._encoder.fingerprint != self.library.snac:
                    raise RuntimeError("the SNAC encoder's checkpoint is not the library's")
            return self._encoder

    def add(
        self, name: str, pairs: Sequence[tuple[str, AudioInput]], *, reserved: Collection[str] = ()
    ) -> CustomVoice:
        """Check, encode and store a voice (blocking: run it on a worker thread)."""
        check_voice_name(name)
        if name in reserved or name in self.library:
            raise VoiceExists(f"a voice named {name!r} already exists; remove it first")
        voice = encode_voice(self.encoder(), name, pairs)
        self.library.add(voice, reserved=reserved)
        return voice
