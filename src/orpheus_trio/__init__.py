"""orpheus-trio: stream Orpheus text-to-speech into Trio applications."""

from .audio.pcm import SAMPLE_RATE
from .client import AudioStream, EndpointSnapshot, OrpheusTTS
from .errors import (
    CircuitOpenError,
    DeadlineExceeded,
    HTTPStatusError,
    IncompleteStreamError,
    SlowBodyError,
    OrpheusError,
    ProtocolError,
    ServiceError,
    RunawaySpeechWarning,
    TruncatedSpeechWarning,
)
from .options import Breaker, Hedging, Pool, Timeouts

__version__ = "0.1.0"

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
