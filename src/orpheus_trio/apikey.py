"""What an API key may contain, checked the same way by the client and the server.

A key travels in an HTTP header (``Authorization: Bearer <key>`` or
``X-API-Key``), whose bytes both sides must agree on. Header text outside
ASCII has no agreed encoding (the client would send latin-1, a server may
read UTF-8) and whitespace at either end is trimmed on the way, so such a key
could never match. Both sides refuse it when they are configured instead.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "Secret", "check_api_key"]

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
    out of text a server wrote (a server or a proxy may echo the header it got)."""

    __slots__ = ("value", "_pattern")

    def __init__(self, value: str) -> None:
        self.value = value
        self._pattern = re.compile(re.escape(value), re.IGNORECASE)

    def __repr__(self) -> str:
        return "<hidden>"

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the key (in any letter case) replaced."""
        return self._pattern.sub(REDACTED, text) if self.value else text
