"""The voice-name grammar every path shares: stock voices, aliases and (later) custom voices.

A name is 1..64 characters: a Unicode letter or digit first, then letters,
combining marks, digits, ``-`` ``_`` ``.``; it is in NFC form (so one spelling
per name: Hindi ``ऋतिका`` and a decomposed twin cannot be two voices). So no
name is ``.``, ``..`` or a hidden file's. So Korean
``유나``, Mandarin ``长乐`` and Hindi ``ऋतिका`` pass, while anything that could name
a path (``../x``, ``a/b``, ``C:\\x``), a control character (NUL, newline) or white
space fails. The voice library will use a name as a file name; the gateway and
the workers use it as a key and in a prompt (``"{voice}: {text}"``), so what
passes here is safe in all three.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_VOICE_NAME_CHARS", "InvalidVoiceName", "check_voice_name", "is_voice_name"]

MAX_VOICE_NAME_CHARS = 64
#: Letters (L*), combining marks (M*: Devanagari vowel signs, accents) and digits (N*).
_ALLOWED_CATEGORIES = ("L", "M", "N")
_ALLOWED_PUNCTUATION = frozenset("-_.")


class InvalidVoiceName(ValueError):
    """A string that is not a voice name; the message says which rule it breaks."""


def check_voice_name(name: object) -> str:
    """``name`` if it is a valid voice name, else :class:`InvalidVoiceName` saying why."""
    if not isinstance(name, str):
        raise InvalidVoiceName(f"a voice name must be a string, got {type(name).__name__}")
    if not 1 <= len(name) <= MAX_VOICE_NAME_CHARS:
        raise InvalidVoiceName(
            f"a voice name has 1 to {MAX_VOICE_NAME_CHARS} characters, got {len(name)}"
        )
    for char in name:
        if char in _ALLOWED_PUNCTUATION:
            continue
        if not unicodedata.category(char).startswith(_ALLOWED_CATEGORIES):
            raise InvalidVoiceName(
                f"a voice name holds letters, digits, '-', '_' and '.' only; "
                f"{name!r} has U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')})"
            )
    if not unicodedata.category(name[0]).startswith(("L", "N")):
        raise InvalidVoiceName(f"a voice name starts with a letter or digit: {name!r}")
    if not unicodedata.is_normalized("NFC", name):
        raise InvalidVoiceName(
            f"voice name {name!r} is not in Unicode NFC form; send "
            f"{unicodedata.normalize('NFC', name)!r}"
        )
    return name


def is_voice_name(name: object) -> bool:
    """Whether ``name`` passes :func:`check_voice_name`."""
    try:
        check_voice_name(name)
    except InvalidVoiceName:
        return False
    return True
