"""The ``orpheus`` engine: real Orpheus speech from a local LLM + SNAC decoder.

``orpheus-trio serve --engine orpheus --model PATH --snac PATH [--device cuda]
[--voices tara,leah,...]``. Request parameters: ``temperature``, ``top_p``,
``top_k``, ``repetition_penalty``, ``max_tokens``, ``seed`` (see
:class:`~orpheus_trio.local.llm.SamplingParams`); anything else is rejected
with 400 ``invalid_param`` naming the key. A request without a voice gets the
first configured voice.

After the audio, one ``metrics`` frame reports ``finish_reason`` (``"stop"``
or ``"length"``), ``truncated`` (true when ``max_tokens`` cut the reply),
``tokens`` generated, ``frames`` decoded and ``dropped_tokens`` (the partial
frame a cut left, or frames dropped by ``on_invalid="resync"``); the server's
own closing metrics (``ttfb_ms``, ``rtf``, ...) follow.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from ...local.llm import DEFAULT_VOICES, InvalidParameter
from ...local.engine_client import EngineRequestError
from ...local.tokens import IncompleteFrame, InvalidAudioToken
from ..engine import ORPHEUS_EMOTION_TAGS, EngineError, Hints, InvalidParam, Piece

if TYPE_CHECKING:
    # torch loads with the synthesizer, only when the engine is built.
    from ...local.synthesizer import LocalSynthesizer

__all__ = ["OrpheusEngine", "add_arguments", "from_args"]


class OrpheusEngine:
    """Serves a :class:`LocalSynthesizer`; its ``voices`` are the engine's (the first is the default).

    The synthesizer's tokens come from the on-box LLM (``name`` ``orpheus``) or
    from an inference engine (``orpheus-remote``, see :mod:`.orpheus_remote`).
    """

    def __init__(self, synthesizer: LocalSynthesizer, *, name: str = "orpheus") -> None:
        if not synthesizer.voices:
            raise ValueError(
                "the orpheus engine needs a synthesizer with a list of voices"
            )
        self.name = name
        self.synthesizer = synthesizer
        self._voices = list(synthesizer.voices)

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str],
        snac: str | os.PathLike[str],
        *,
        device: str | None = None,
        voices: Sequence[str] = DEFAULT_VOICES,
        **options: Any,
    ) -> OrpheusEngine:
        """Load both checkpoints (blocking); ``options`` go to :meth:`LocalSynthesizer.load`."""
        from ...local.synthesizer import LocalSynthesizer

        return cls(
            LocalSynthesizer.load(model, snac, device=device, voices=voices, **options)
        )

    def voices(self) -> list[str]:
        # Custom voices too, where this model clones: a gateway routes each to the workers that hold it.
        library = self.synthesizer.voice_library
        if library is None or not self.synthesizer.can_clone:
            return list(self._voices)
        return [*self._voices, *(n for n in library.names() if n not in self._voices)]

    def emotion_tags(self) -> list[str]:
        # The text goes to the model verbatim, so its trained tags reach it intact.
        return list(ORPHEUS_EMOTION_TAGS)

    def validate(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        sampling_params = {k: v for k, v in params.items() if k != "timeout_s"}
        try:
            sampling = self.synthesizer.validate(voice, sampling_params)
        except InvalidParameter as error:
            raise InvalidParam(error.key, error.message) from None
        return {**dataclasses.asdict(sampling), "timeout_s": params.get("timeout_s")}

    async def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        sampling = {k: v for k, v in params.items() if k != "timeout_s"}
        try:
            # The server enforces the deadline; the stream only needs the sampling parameters.
            audio = self.synthesizer.open(text, voice or self._voices[0], **sampling)
        except InvalidParameter as error:
            raise EngineError(
                "invalid_param", str(error), status=400, param=error.key
            ) from None
        except ValueError as error:
            raise EngineError("invalid_request", str(error), status=400) from None
        streamed = False
        async with audio:
            try:
                async for pcm in audio:
                    streamed = True
                    yield pcm
            except (InvalidAudioToken, IncompleteFrame) as error:
                raise EngineError(
                    "engine_error", f"the model produced bad audio tokens: {error}"
                ) from None
            except EngineRequestError as error:
                # Before any audio, the engine's fault is this request's answer (503:
                # clients fail over); after it, an in-band error: the audio is not complete.
                if streamed:
                    raise EngineError("engine_error", error.message) from None
                raise EngineError(
                    error.code,
                    error.message,
                    status=error.status,
                    retry_after_s=error.retry_after_s,
                ) from None
        yield Hints(
            {
                "finish_reason": audio.finish_reason,
                "truncated": audio.truncated,
                "tokens": audio.tokens,
                "frames": audio.frames,
                "dropped_tokens": audio.dropped_tokens,
            }
        )

    async def aclose(self) -> None:
        await self.synthesizer.aclose()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options the ``orpheus`` engine reads."""
    group = parser.add_argument_group("orpheus engine (--engine orpheus)")
    group.add_argument("--model", help="Orpheus checkpoint: local directory or hub id")
    group.add_argument(
        "--snac", help="SNAC 24 kHz checkpoint: local directory or hub id"
    )
    group.add_argument("--tokenizer", help="tokenizer, if not the model's own")
    group.add_argument(
        "--device", help="torch device (default: cuda when present, else cpu)"
    )
    group.add_argument(
        "--dtype", help="model dtype (default: bfloat16 on cuda, float32 on cpu)"
    )
    group.add_argument(
        "--voices",
        default=",".join(DEFAULT_VOICES),
        help="comma-separated voice names; the first is the default (default: %(default)s)",
    )


def from_args(args: argparse.Namespace) -> OrpheusEngine:
    """Build the engine from ``serve`` arguments; ``ValueError`` names what is missing."""
    missing = [
        flag
        for flag, value in (("--model", args.model), ("--snac", args.snac))
        if not value
    ]
    if missing:
        raise ValueError(f"--engine orpheus needs {' and '.join(missing)}")
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    if not voices:
        raise ValueError(f"--voices needs at least one name, got {args.voices!r}")
    return OrpheusEngine.load(
        args.model,
        args.snac,
        device=args.device,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        voices=voices,
    )
