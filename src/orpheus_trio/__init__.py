"""orpheus-trio: stream Orpheus text-to-speech into Trio applications."""

from .client import AudioStream, EndpointSnapshot, OrpheusTTS
from .errors import (
    CircuitOpenError,
    DeadlineExceeded,
    HTTPStatusError,
    IncompleteStreamError,
    OrpheusError,
    ProtocolError,
    ServiceError,
)

__version__ = "0.1.0"

__all__ = [
    "AudioStream",
    "EndpointSnapshot",
    "OrpheusTTS",
    "CircuitOpenError",
    "DeadlineExceeded",
    "HTTPStatusError",
    "IncompleteStreamError",
    "OrpheusError",
    "ProtocolError",
    "ServiceError",
    "SAMPLE_RATE",
    "__version__",
]

#: Every Orpheus stream is mono s16le at this rate.
SAMPLE_RATE = 24_000
