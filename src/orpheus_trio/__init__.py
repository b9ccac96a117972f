"""orpheus-trio: stream Orpheus text-to-speech into Trio and asyncio applications.

The public names are loaded on first use (module ``__getattr__``), so that
``import orpheus_trio`` (and the command line, which only needs its own
sub-command) does not pay for the client's dependencies up front.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the CLI starts here)
if TYPE_CHECKING:
    from typing import Any

    from .audio.pcm import SAMPLE_RATE
    from .client import AudioStream, EndpointSnapshot, OrpheusTTS
    from .errors import (
        CircuitOpenError,
        DeadlineExceeded,
        HTTPStatusError,
        IncompleteStreamError,
        OrpheusError,
        ProtocolError,
        RunawaySpeechWarning,
        ServiceError,
        SlowBodyError,
        TruncatedSpeechWarning,
    )
    from .options import Breaker, Hedging, Pool, Timeouts

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_PUBLIC = {
    "AudioStream": ".client",
    "EndpointSnapshot": ".client",
    "OrpheusTTS": ".client",
    "Breaker": ".options",
    "Hedging": ".options",
    "Pool": ".options",
    "Timeouts": ".options",
    "CircuitOpenError": ".errors",
    "DeadlineExceeded": ".errors",
    "HTTPStatusError": ".errors",
    "IncompleteStreamError": ".errors",
    "SlowBodyError": ".errors",
    "OrpheusError": ".errors",
    "ProtocolError": ".errors",
    "ServiceError": ".errors",
    "RunawaySpeechWarning": ".errors",
    "TruncatedSpeechWarning": ".errors",
    "SAMPLE_RATE": ".audio.pcm",
}

__all__ = [
    "AudioStream",
    "EndpointSnapshot",
    "OrpheusTTS",
    "Breaker",
    "Hedging",
    "Pool",
    "Timeouts",
    "CircuitOpenError",
    "DeadlineExceeded",
    "HTTPStatusError",
    "IncompleteStreamError",
    "SlowBodyError",
    "OrpheusError",
    "ProtocolError",
    "ServiceError",
    "TruncatedSpeechWarning",
    "RunawaySpeechWarning",
    "SAMPLE_RATE",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        # A submodule (``orpheus_trio.audio``), as when this package imported them all up front.
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
