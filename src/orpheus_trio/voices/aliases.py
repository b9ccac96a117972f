"""OpenAI's voice names as aliases for the served voices, so ``voice="alloy"`` just works.

OpenAI-compatible tools (the ``openai`` SDK, LiteLLM, Open WebUI) send OpenAI's
own names. Each maps to a served voice: for the English fine-tune by the table
below (gender and timbre as OpenAI describes its voices: ``onyx`` deep and
male, ``nova`` and ``shimmer`` bright and female, ``alloy`` neutral, its default,
so the model's default); for other voice sets by gender where known, round
robin over the voices of the default voice's language, else the default voice.
A deployment overrides any entry (``--voice-alias alloy=pierre``, or a JSON file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .names import InvalidVoiceName, check_voice_name

if TYPE_CHECKING:
    from .catalog import Voice

__all__ = [
    "ENGLISH_ALIASES",
    "OPENAI_VOICES",
    "default_aliases",
    "parse_alias",
    "parse_alias_file",
]

#: OpenAI's voices and the gender they are usually described with (``None``: neutral).
OPENAI_VOICES: dict[str, str | None] = {
    "alloy": None, "ash": "male", "ballad": "male", "coral": "female", "echo": "male",
    "fable": "male", "nova": "female", "onyx": "male", "sage": "female",
    "shimmer": "female", "verse": "male",
}  # fmt: skip
#: The English fine-tune's table: tara is its default and most natural voice.
ENGLISH_ALIASES: dict[str, str] = {
    "alloy": "tara", "ash": "leo", "ballad": "dan", "coral": "leah", "echo": "zac",
    "fable": "dan", "nova": "mia", "onyx": "leo", "sage": "zoe", "shimmer": "jess",
    "verse": "zac",
}  # fmt: skip


def default_aliases(voices: Sequence[Voice]) -> dict[str, str]:
    """OpenAI's names onto ``voices`` (see the module docstring); none when there are none."""
    if not voices:
        return {}
    names = {voice.name for voice in voices}
    if set(ENGLISH_ALIASES.values()) <= names:
        return dict(ENGLISH_ALIASES)
    default = voices[0]
    pool = [v for v in voices if v.language == default.language]
    taken = {"female": 0, "male": 0}
    table: dict[str, str] = {}
    for alias, gender in OPENAI_VOICES.items():
        matches = [v for v in pool if gender is not None and v.gender == gender]
        if not matches:
            table[alias] = default.name
            continue
        table[alias] = matches[taken[gender] % len(matches)].name  # type: ignore[index]
        taken[gender] += 1  # type: ignore[index]
    return table


def parse_alias(text: str) -> tuple[str, str]:
    """``"alloy=tara"`` -> ``("alloy", "tara")``; ``ValueError`` saying what is wrong."""
    alias, sep, voice = text.partition("=")
    alias, voice = alias.strip(), voice.strip()
    if not sep or not alias or not voice:
        raise ValueError(f"a voice alias is ALIAS=VOICE (e.g. alloy=tara), got {text!r}")
    try:
        return check_voice_name(alias), check_voice_name(voice)
    except InvalidVoiceName as error:
        raise ValueError(f"voice alias {text!r}: {error}") from None


def parse_alias_file(text: str) -> dict[str, str]:
    """A JSON object of alias -> voice (the ``--voice-alias-file`` format)."""
    try:
        table = json.loads(text)
    except ValueError as error:
        raise ValueError(f"a voice alias file is a JSON object: {error}") from None
    if not isinstance(table, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in table.items()
    ):
        raise ValueError('a voice alias file is a JSON object of strings: {"alloy": "tara"}')
    return dict(parse_alias(f"{k}={v}") for k, v in table.items())
