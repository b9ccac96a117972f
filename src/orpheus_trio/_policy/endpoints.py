"""The endpoints a client talks to: their URLs, checked once, and one record each.

Each :class:`Endpoint` holds everything the client keeps about one server
(its breaker and its counts); routing's scores live in the
:class:`~orpheus_trio._policy.routing.Router`, keyed by the same URL; both are
owned by :class:`~orpheus_trio._policy.attempts.Attempts`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from .breaker import CircuitBreaker

__all__ = ["STREAM_PATH", "Endpoint", "EndpointSnapshot", "normalize_urls"]

STREAM_PATH = "/v1/tts/stream"


@dataclass(frozen=True, slots=True)
class EndpointSnapshot:
    """One endpoint's state, as :meth:`OrpheusTTS.endpoints` reports it.

    ``score``: expected cost of the next request there (lower is better).
    ``latency_estimate_s``: peak-EWMA time to first audio, ``None`` while cold.
    ``queue_hint``: the server's last queue depth, faded by age.
    ``in_flight``: this client's open attempts there.
    ``breaker_state``: ``"closed"``, ``"open"`` or ``"half_open"``;
    ``breaker_retry_in_s``: seconds until an attempt may go there again.
    ``attempts``, ``wins``, ``failures``: counts since the client was made;
    ``hedges`` and ``failovers``: how many of those attempts were started as such.
    """

    url: str
    score: float
    latency_estimate_s: float | None
    queue_hint: float
    in_flight: int
    breaker_state: str
    breaker_retry_in_s: float
    attempts: int
    wins: int
    failures: int
    hedges: int = 0
    failovers: int = 0


@dataclass(eq=False)
class Endpoint:
    """One endpoint's state: its breaker and what happened there so far."""

    url: str
    breaker: CircuitBreaker
    attempts: int = 0
    wins: int = 0
    failures: int = 0
    hedges: int = 0
    failovers: int = 0
    #: Routing avoids it until then (a 429/503's ``Retry-After``).
    busy_until: float = 0.0


_DEFAULT_PORTS = {"http": 80, "https": 443}
#: A host name or an IP address (IPv6 without its brackets, as urlsplit gives it).
_HOST = re.compile(r"[A-Za-z0-9._\-:%]+")


def normalize_urls(base_urls: str | Sequence[str]) -> tuple[str, ...]:
    urls = (base_urls,) if isinstance(base_urls, str) else tuple(base_urls)
    if not urls:
        raise ValueError("base_urls is empty: give at least one endpoint URL")
    normalized = []
    seen: dict[tuple[str, str, int, str], str] = {}
    for url in urls:
        if not isinstance(url, str):
            raise TypeError(f"endpoint URLs must be str, got {type(url).__name__}")
        parts = urlsplit(url)
        if "@" in parts.netloc:  # not echoed: the URL holds credentials
            raise ValueError(
                "endpoint URL must be http(s)://host[:port][/path], without credentials "
                "(give the key as api_key)"
            )
        scheme = parts.scheme.lower()
        if (
            scheme not in _DEFAULT_PORTS
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"endpoint URL must be http(s)://host[:port][/path], got {url!r}"
            )
        host = parts.hostname
        if not host or not _HOST.fullmatch(host):
            raise ValueError(f"endpoint URL {url!r} has no valid host")
        try:
            port = parts.port
        except ValueError as error:  # not a number, or past 65535
            raise ValueError(f"endpoint URL {url!r} has a bad port: {error}") from None
        if port == 0:
            raise ValueError(f"endpoint URL {url!r} has a bad port: 0")
        if parts.path.rstrip("/").endswith(STREAM_PATH):
            raise ValueError(
                f"endpoint URL {url!r} names the stream path: give the base URL "
                f"{url[: url.rindex(STREAM_PATH)]!r} (the client adds {STREAM_PATH})"
            )
        # One server under two spellings would be routed, hedged and broken as two.
        key = (scheme, host.lower(), port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/"))
        if key in seen:
            raise ValueError(f"endpoint URLs {seen[key]!r} and {url!r} name the same server twice")
        seen[key] = url
        normalized.append(url.rstrip("/"))
    return tuple(normalized)
