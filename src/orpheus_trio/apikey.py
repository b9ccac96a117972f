"""What an API key may contain, checked the same way by the client and the server.

A key travels in an HTTP header (``Authorization: Bearer <key>`` or
``X-API-Key``), whose bytes both sides must agree on. Header text outside
ASCII has no agreed encoding (the client would send latin-1, a server may
read UTF-8) and whitespace at either end is trimmed on the way, so such a key
could never match. Both sides refuse it when they are configured instead.
"""

from __future__ import annotations

import base64
import re

__all__ = ["MIN_PIECE_CHARS", "REDACTED", "Secret", "check_api_key"]

#: What stands in a message where a server echoed the key.
REDACTED = "<api key>"

_VISIBLE_ASCII = frozenset(chr(c) for c in range(0x21, 0x7F))


def check_api_key(key: object, what: str = "api_key") -> str:
    """``key`` if it is a usable API key, else ``ValueError`` saying why.

    The message never contains the key.
    """
    if not isinstance(key, str):
        raise ValueError(f"{what} must be a string, got {type(key).__name__}")
    if not key:
        raise ValueError(f"{what} must not be empty")
    bad = next((i for i, c in enumerate(key) if c not in _VISIBLE_ASCII), None)
    if bad is not None:
        raise ValueError(
            f"{what} may contain only visible ASCII characters (no spaces, control "
            f"characters or non-ASCII letters); character {bad + 1} of {len(key)} is not"
        )
    return key


class Secret:
    """Holds an API key: its repr never shows it, and :meth:`redact` blanks it
    out of text a server wrote (a server or a proxy may echo the header it got,
    whole, cut short, or encoded).

    ``placeholder``: what stands where the key was (``<api key>``; a gateway
    names its upstream key ``<upstream key>``).
    """

    __slots__ = ("_pattern", "placeholder", "value")

    def __init__(self, value: str, *, placeholder: str = REDACTED) -> None:
        self.value = value
        self.placeholder = placeholder
        pieces = sorted(_pieces(value), key=lambda piece: (-len(piece), piece))
        self._pattern = (
            re.compile("|".join(map(re.escape, pieces)), re.IGNORECASE) if pieces else None
        )

    def __repr__(self) -> str:
        return "<hidden>"

    def redact(self, text: str) -> str:
        """``text`` with every form of the key replaced by :attr:`placeholder`:
        the key in any letter case, its base64 (standard or URL-safe, padded
        or not, alone or inside a longer encoded text such as ``Bearer <key>``)
        and its hex, and any run of :data:`MIN_PIECE_CHARS` or more characters
        of each of these (a key cut short). A run of overlapping or touching
        pieces is replaced once."""
        pattern = self._pattern
        if pattern is None:
            return text
        spans: list[list[int]] = []
        position = 0
        while (match := pattern.search(text, position)) is not None:
            start, end = match.span()
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
            position = start + 1  # a later piece may overlap this one and reach further
        if not spans:
            return text
        out: list[str] = []
        last = 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(self.placeholder)
            last = end
        out.append(text[last:])
        return "".join(out)


#: The shortest run of a key's characters (or of one of its encodings) that is
#: blanked out: shorter runs are too common in ordinary text to stand for the key.
MIN_PIECE_CHARS = 8


def _encodings(key: str) -> list[str]:
    """The texts a key can be echoed as: itself, its hex, and its base64 (both
    alphabets) at each of the three byte alignments it can sit at inside a longer
    encoded text (``Bearer <key>``, ``user:<key>``), trimmed to the characters
    that depend on the key's bytes alone."""
    raw = key.encode()
    whole_b64 = base64.b64encode(raw).decode()  # alone, its last quad and padding too
    forms = [key, raw.hex(), whole_b64, whole_b64.replace("+", "-").replace("/", "_")]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        # Each base64 quad holds 3 bytes: the first quad mixes in the padding bytes
        # (when offset > 0), the last one the bytes that follow the key (or "=").
        whole = len(raw) + offset
        inner = encoded[4 if offset else 0 : (whole // 3) * 4]
        forms.append(inner)
        forms.append(inner.replace("+", "-").replace("/", "_"))
    return [form for form in forms if form]


def _pieces(key: str) -> set[str]:
    """Every run of :data:`MIN_PIECE_CHARS` characters of every encoding of
    ``key`` (any longer run contains one), or the whole key when it is shorter."""
    if not key:
        return set()
    pieces: set[str] = set()
    for form in _encodings(key):
        if len(form) <= MIN_PIECE_CHARS:
            if form == key:
                pieces.add(form)  # a short key is still blanked out whole
            continue
        pieces.update(
            form[i : i + MIN_PIECE_CHARS] for i in range(len(form) - MIN_PIECE_CHARS + 1)
        )
    return pieces
