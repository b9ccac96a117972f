"""The transport seam: how the client opens one streamed HTTP response (:mod:`.base`), and
the engines behind it: :mod:`.loop` (the default: HTTP/1.1 on the sockets of whichever loop
runs the request), :mod:`.trio`, :mod:`.asyncio` and :mod:`.base`'s ``HttpxTransport``.
Tests use :class:`orpheus_trio.testing.MockTransport`."""

from .asyncio import AsyncioTransport
from .base import HttpxTransport, ResponseStream, StreamRequest, Transport
from .loop import LoopTransport
from .trio import InsecureTransportWarning, TrioTransport

__all__ = [
    "AsyncioTransport",
    "HttpxTransport",
    "InsecureTransportWarning",
    "LoopTransport",
    "ResponseStream",
    "StreamRequest",
    "Transport",
    "TrioTransport",
]
