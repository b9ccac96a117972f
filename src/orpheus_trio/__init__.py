"""orpheus-trio: stream Orpheus text-to-speech into Trio applications."""

from .audio import SAMPLE_RATE
from .client import AudioStream, EndpointSnapshot, OrpheusTTS
from .errors import (
    CircuitOpenError,
    DeadlineExceeded,
    HTTPStatusError,
    IncompleteStreamError,
    OrpheusError,
    ProtocolError,
    ServiceError,
    TruncatedSpeechWarning,
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
    "TruncatedSpeechWarning",
    "SAMPLE_RATE",
    "__version__",
]
