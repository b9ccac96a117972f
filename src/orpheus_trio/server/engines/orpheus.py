"""The ``orpheus`` engine: real Orpheus speech from a local LLM + SNAC decoder.

``orpheus-trio serve --engine orpheus --model PATH --snac PATH [--device cuda]
[--model-family fr] [--voices pierre,...] [--voice-alias alloy=marie]``. The
checkpoint's family (its voices, languages and tags: :mod:`orpheus_trio.voices`)
comes from ``--model-family``, else from the checkpoint directory
(``orpheus-family.txt`` or ``config.json``, see
:func:`~orpheus_trio.voices.family_from_checkpoint`), else the English fine-tune. Request parameters: ``temperature``, ``top_p``,
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
import json
import os
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import ServiceError
from ...local.llm import DEFAULT_VOICES, InvalidParameter
from ...local.engine_faults import EngineRequestError
from ...local.tokens import IncompleteFrame, InvalidAudioToken, NoAudio
from ...voices import (
    DEFAULT_FAMILY,
    FAMILIES,
    FAMILY_MARKER_FILE,
    Voice,
    VoiceCatalog,
    catalog_for,
    family_from_checkpoint,
)
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

    def __init__(
        self,
        synthesizer: LocalSynthesizer,
        *,
        name: str = "orpheus",
        catalog: VoiceCatalog | None = None,
    ) -> None:
        """``catalog``: the checkpoint's voices (default: the synthesizer's, as the
        English fine-tune's); one with no voices serves the text alone (pretrained)."""
        if catalog is None:
            if not synthesizer.voices:
                raise ValueError(
                    "the orpheus engine needs a synthesizer with a list of voices"
                )
            catalog = catalog_for(DEFAULT_FAMILY, voices=list(synthesizer.voices))
        self.name = name
        self.synthesizer = synthesizer
        self._catalog = catalog
        self._voices = catalog.names()

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str],
        snac: str | os.PathLike[str],
        *,
        device: str | None = None,
        voices: Sequence[str] | VoiceCatalog = DEFAULT_VOICES,
        **options: Any,
    ) -> OrpheusEngine:
        """Load both checkpoints (blocking); ``options`` go to :meth:`LocalSynthesizer.load`.
        ``voices``: names (as the English fine-tune's) or the checkpoint's catalog."""
        from ...local.synthesizer import LocalSynthesizer

        return cls(
            LocalSynthesizer.load(model, snac, device=device, voices=voices, **options),
            catalog=voices if isinstance(voices, VoiceCatalog) else None,
        )

    def voices(self) -> list[str]:
        # Custom voices too, where this model clones: a gateway routes each to the workers that hold it.
        custom = self._custom_voices() if self.synthesizer.can_clone else []
        return [*self._voices, *custom]

    def catalog(self) -> VoiceCatalog:
        """The checkpoint's voices, then the library's custom ones (kind ``custom``; where the
        model cannot clone they are listed so that asking for one says why it fails)."""
        custom = self._custom_voices()
        if not custom:
            return self._catalog
        language = (self._catalog.languages() or ["en"])[0]  # what the checkpoint speaks
        family = self._catalog.voices[0].family if self._catalog.voices else "custom"
        return self._catalog.with_voices(Voice(name, language, "custom", family) for name in custom)

    def _custom_voices(self) -> list[str]:
        library = self.synthesizer.voice_library
        if library is None:
            return []
        taken = {*self._voices, *self._catalog.aliases}  # a stock name or alias is never shadowed
        return [name for name in library.names() if name not in taken]

    def emotion_tags(self) -> list[str]:
        # The text goes to the model verbatim, so its trained tags reach it intact.
        return self._catalog.emotion_tags() or list(ORPHEUS_EMOTION_TAGS)

    def validate(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        sampling_params = {k: v for k, v in params.items() if k != "timeout_s"}
        try:
            sampling = self.synthesizer.validate(voice, sampling_params)
        except InvalidParameter as error:
            raise InvalidParam(error.key, error.message) from None
        # Only what the caller gave, checked: a missing max_tokens is derived from the text.
        checked = {
            key: value
            for key, value in dataclasses.asdict(sampling).items()
            if key in sampling_params
        }
        if "runaway" in sampling_params:
            checked["runaway"] = sampling_params["runaway"]
        return {**checked, "timeout_s": params.get("timeout_s")}

    async def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        sampling = {k: v for k, v in params.items() if k != "timeout_s"}
        try:
            # The server enforces the deadline; the stream only needs the sampling parameters.
            default = self._voices[0] if self._voices else None
            audio = self.synthesizer.open(text, voice or default, **sampling)
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
            except (InvalidAudioToken, IncompleteFrame, NoAudio) as error:
                # Before any audio, a 502: clients fail over to another worker; after it,
                # an in-band error. The message is built here: a bad token's text is the
                # model's (an engine's) output, never shown to the caller.
                raise EngineError(
                    "engine_error", _token_fault(error), status=None if streamed else 502
                ) from None
            except ServiceError as error:  # runaway="error": the guard ended the speech
                raise EngineError(error.code, error.message) from None
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
                **({"runaway": audio.runaway} if audio.runaway else {}),
            }
        )

    async def aclose(self) -> None:
        await self.synthesizer.aclose()


def _token_fault(error: InvalidAudioToken | IncompleteFrame | NoAudio) -> str:
    """The caller's message for bad tokens, from the error's fields (never the token's text)."""
    if isinstance(error, InvalidAudioToken):
        return (
            f"the model produced a bad audio token: {error.reason} (token {error.index}, "
            f"frame {error.frame}, position {error.position})"
        )
    if isinstance(error, IncompleteFrame):
        return f"the model's reply ended inside frame {error.frame} ({error.tokens} of 7 tokens)"
    return f"the model's reply held no audio ({error.tokens} tokens)"


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
        help="comma-separated voice names served; the first is the default "
        "(default: the model family's, e.g. tara,leah,... for the English fine-tune)",
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
    catalog = catalog_from_args(args, checkpoint=args.model)
    return OrpheusEngine.load(
        args.model,
        args.snac,
        device=args.device,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        voices=catalog,
    )


def checkpoint_family(checkpoint: str | os.PathLike[str] | None) -> str | None:
    """The family a checkpoint names: its directory's marker file or config.json,
    or a known hub id itself (see :func:`~orpheus_trio.voices.family_from_checkpoint`)."""
    if checkpoint is None:
        return None
    path = os.fspath(checkpoint)
    if not os.path.isdir(path):  # a hub id: match it as config.json would record it
        return family_from_checkpoint({"_name_or_path": path})
    config: dict[str, Any] | None = None
    marker: str | None = None
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as file:
            loaded = json.load(file)
        config = loaded if isinstance(loaded, dict) else None
    except (OSError, ValueError):
        config = None  # loading the model reports a missing or broken config
    try:
        with open(os.path.join(path, FAMILY_MARKER_FILE), encoding="utf-8") as file:
            marker = file.read(256)
    except OSError:
        marker = None
    return family_from_checkpoint(config, marker)


def catalog_from_args(
    args: argparse.Namespace, *, checkpoint: str | os.PathLike[str] | None
) -> VoiceCatalog:
    """The catalog of ``--model-family`` (else the checkpoint's, else the English
    fine-tune's), ``--voices`` and the aliases of ``--voice-alias``/``--voice-alias-file``."""
    family = getattr(args, "model_family", None) or checkpoint_family(checkpoint)
    voices = None
    if getattr(args, "voices", None) is not None:
        voices = [v.strip() for v in args.voices.split(",") if v.strip()]
        if not voices:
            raise ValueError(f"--voices needs at least one name, got {args.voices!r}")
    return catalog_for(
        family or DEFAULT_FAMILY, voices=voices, aliases=alias_overrides(args)
    )


def alias_overrides(args: argparse.Namespace) -> dict[str, str]:
    """``--voice-alias-file`` (a JSON object), then each ``--voice-alias A=V`` over it."""
    from ...voices import parse_alias, parse_alias_file

    table: dict[str, str] = {}
    path = getattr(args, "voice_alias_file", None)
    if path:
        with open(path, encoding="utf-8") as file:
            table.update(parse_alias_file(file.read()))
    table.update(parse_alias(text) for text in getattr(args, "voice_alias", None) or ())
    return table


def add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model-family``, ``--voice-alias`` and ``--voice-alias-file``: every engine's."""
    group = parser.add_argument_group("voices and languages")
    group.add_argument(
        "--model-family", choices=sorted(FAMILIES),
        help="the checkpoint's family: its voices, languages and tags (default: what the "
        f"checkpoint directory says, else {DEFAULT_FAMILY}); see docs/voices.md",
    )  # fmt: skip
    group.add_argument(
        "--voice-alias", action="append", default=[], metavar="ALIAS=VOICE",
        help="serve ALIAS (e.g. OpenAI's alloy) as VOICE (repeatable; overrides the "
        "default table and --voice-alias-file)",
    )  # fmt: skip
    group.add_argument(
        "--voice-alias-file", metavar="PATH",
        help='a JSON object of aliases, {"alloy": "tara", ...}',
    )  # fmt: skip
