"""The voice catalog: families, voices, languages, tags, OpenAI aliases and the name grammar.

Sans-IO (no I/O library is imported here), so the client, ``local``, ``server``
and the CLI all use it.
"""

from .aliases import ENGLISH_ALIASES, OPENAI_VOICES, parse_alias, parse_alias_file
from .catalog import (
    DEFAULT_FAMILY,
    FAMILIES,
    FAMILY_MARKER_FILE,
    LANGUAGE_NAMES,
    LANGUAGE_TAGS,
    Family,
    UnknownVoice,
    Voice,
    VoiceCatalog,
    VoiceKind,
    catalog_for,
    espeak_family,
    family_from_checkpoint,
)
from .names import MAX_VOICE_NAME_CHARS, InvalidVoiceName, check_voice_name, is_voice_name

__all__ = [
    "DEFAULT_FAMILY",
    "ENGLISH_ALIASES",
    "FAMILIES",
    "FAMILY_MARKER_FILE",
    "LANGUAGE_NAMES",
    "LANGUAGE_TAGS",
    "MAX_VOICE_NAME_CHARS",
    "OPENAI_VOICES",
    "Family",
    "InvalidVoiceName",
    "UnknownVoice",
    "Voice",
    "VoiceCatalog",
    "VoiceKind",
    "catalog_for",
    "check_voice_name",
    "espeak_family",
    "family_from_checkpoint",
    "is_voice_name",
    "parse_alias",
    "parse_alias_file",
]
