"""API keys: ``Authorization: Bearer`` or ``X-API-Key``, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from .exchange import HTTPError

__all__ = ["KeyCheck"]


class KeyCheck:
    """Accepts a request that presents one of ``keys`` (every request when there are none)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    def authorize(self, headers: dict[str, str]) -> None:
        """Return if the key is good; raise :class:`HTTPError` 401 otherwise."""
        if not self._keys:
            return
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            presented = token.strip()
        else:
            presented = headers.get("x-api-key", "")
        if not presented:
            raise HTTPError(401, "unauthorized", "missing API key", close=True)
        given = presented.encode()
        # Compare against every key, without stopping early, in constant time per key.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise HTTPError(401, "unauthorized", "invalid API key", close=True)
