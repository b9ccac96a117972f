"""Prometheus metrics for one server, in its own registry (never the global one),
so several servers can live in one process (tests, a gateway beside workers)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "ServerMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class ServerMetrics:
    """The worker's (and a gateway's) request, error, latency and load metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "orpheus_requests",
            "Synthesis requests by final HTTP status",
            ["status"],
            registry=r,
        )
        self.errors = Counter(
            "orpheus_errors", "Errors by code (HTTP and in-band)", ["code"], registry=r
        )
        self.time_to_first_audio = Histogram(
            "orpheus_time_to_first_audio_seconds",
            "From request received to first audio chunk sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "orpheus_request_duration_seconds",
            "From request received to response end",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            "orpheus_audio_seconds", "Seconds of audio streamed", registry=r
        )
        self.queue_depth = Gauge(
            "orpheus_queue_depth", "Requests waiting for a slot", registry=r
        )
        self.inflight = Gauge(
            "orpheus_inflight", "Requests being synthesized", registry=r
        )
        self.capacity = Gauge("orpheus_capacity", "Concurrency limit", registry=r)

    def record_request(self, status: int, duration_s: float, audio_s: float) -> None:
        """A synthesis request ended with ``status`` after ``duration_s``, streaming ``audio_s``."""
        self.requests.labels(status=str(status)).inc()
        self.request_duration.observe(duration_s)
        self.audio_seconds.inc(audio_s)

    def set_load(self, queued: int, running: int) -> None:
        self.queue_depth.set(queued)
        self.inflight.set(running)

    def render(self) -> bytes:
        return generate_latest(self.registry)
