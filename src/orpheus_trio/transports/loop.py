"""The client's default transport: the fast one of whichever loop runs the request.

:class:`~orpheus_trio.transports.trio.TrioTransport` under Trio,
:class:`~orpheus_trio.transports.asyncio.AsyncioTransport` under asyncio; both
share the pool and the HTTP framing of :mod:`~orpheus_trio._http.pool`. The
choice is made at the first request, since a client is often built before any
loop runs. A client used from a new loop later (a second ``asyncio.run``)
gets a fresh pool there: connections belong to the loop that opened them.
"""

from __future__ import annotations

import ssl
from typing import Any

from .._util.loops import current_loop, loop_identity
from .asyncio import AsyncioTransport
from .._http.pool import PooledTransport, warn_verification_off
from .base import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
    DEFAULT_READ_TIMEOUT_S,
    ResponseStream,
    StreamRequest,
)
from .trio import TrioTransport

__all__ = ["LoopTransport"]


class LoopTransport:
    """A :class:`~orpheus_trio.transports.base.Transport` that runs natively on Trio and asyncio."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
        max_connections_per_endpoint: int = DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
    ) -> None:
        if max_connections_per_endpoint < 1:
            raise ValueError("max_connections_per_endpoint must be >= 1")
        if ssl_context is not None and not verify:
            raise ValueError("give ssl_context or verify=False, not both")
        self._options: dict[str, Any] = {
            "connect_timeout_s": connect_timeout_s,
            "read_timeout_s": read_timeout_s,
            "max_connections_per_endpoint": max_connections_per_endpoint,
            "ssl_context": ssl_context,
        }
        if not verify:
            warn_verification_off()
        self._verify = verify
        self._inner: PooledTransport | None = None
        self._loop: object = None
        self._closed = False

    @property
    def inner(self) -> PooledTransport | None:
        """The loop's transport in use (``None`` before the first request)."""
        return self._inner

    def _transport(self) -> PooledTransport:
        loop = loop_identity()
        inner = self._inner
        if inner is not None and loop is self._loop:
            return inner
        if self._closed:
            raise RuntimeError("transport is closed")
        if inner is not None:
            inner.abandon()  # the old loop's connections cannot be used here
        kind = TrioTransport if current_loop() == "trio" else AsyncioTransport
        inner = self._inner = kind(**self._options, verify=self._verify, warn=False)
        self._loop = loop
        return inner

    async def open_stream(self, request: StreamRequest) -> ResponseStream:
        return await self._transport().open_stream(request)

    async def aclose(self) -> None:
        self._closed = True
        inner, self._inner = self._inner, None
        if inner is not None:
            if loop_identity() is self._loop:
                await inner.aclose()
            else:
                inner.abandon()
