"""What an API key may contain, checked the same way by the client and the server.

A key travels in an HTTP header (``Authorization: Bearer <key>`` or
``X-API-Key``), whose bytes both sides must agree on. Header text outside
ASCII has no agreed encoding (the client would send latin-1, a server may
read UTF-8) and whitespace at either end is trimmed on the way, so such a key
could never match. Both sides refuse it when they are configured instead.
"""

from __future__ import annotations

__all__ = ["check_api_key"]

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
