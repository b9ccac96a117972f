"""Per-upstream Prometheus series for the gateway, added to the server's own registry.

Counters and states are read from the client's endpoint snapshots at scrape
time (the client already counts them), so nothing is counted twice; only time
to first audio is observed here, per winning upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ...client import EndpointSnapshot
from ..metrics import LATENCY_BUCKETS

__all__ = ["BREAKER_STATES", "UpstreamMetrics"]

BREAKER_STATES = ("closed", "half_open", "open")

_COUNTERS = (
    ("attempts", "Attempts sent to the upstream (first tries, hedges and failovers)"),
    ("hedges", "Attempts sent to the upstream as hedges"),
    ("failovers", "Attempts sent to the upstream after another attempt failed"),
    ("wins", "Attempts at the upstream that won their race"),
    ("failures", "Attempts at the upstream that counted against its breaker"),
)


class UpstreamMetrics(Collector):
    """``orpheus_upstream_*`` series, one label ``upstream`` per worker URL."""

    def __init__(
        self,
        snapshots: Callable[[], Sequence[EndpointSnapshot]],
        healthy: Callable[[EndpointSnapshot], bool],
    ) -> None:
        self._snapshots = snapshots
        self._healthy = healthy
        # Not registered anywhere itself: ``collect`` yields it with the rest.
        self.time_to_first_audio = Histogram(
            "orpheus_upstream_time_to_first_audio_seconds",
            "From forwarding a request to the winning upstream's first audio "
            "(hedges and failovers included), by winning upstream",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )

    def collect(self) -> Iterable[Metric]:
        snapshots = self._snapshots()
        counters = {
            name: CounterMetricFamily(
                f"orpheus_upstream_{name}", meaning, labels=["upstream"]
            )
            for name, meaning in _COUNTERS
        }
        breaker = GaugeMetricFamily(
            "orpheus_upstream_breaker_state",
            "1 for the upstream's current breaker state, 0 for the others",
            labels=["upstream", "state"],
        )
        healthy = GaugeMetricFamily(
            "orpheus_upstream_healthy",
            "1 when the upstream's last /v1/system answered, it is not draining "
            "and its breaker is not open",
            labels=["upstream"],
        )
        in_flight = GaugeMetricFamily(
            "orpheus_upstream_inflight",
            "The gateway's open attempts at the upstream",
            labels=["upstream"],
        )
        queue_hint = GaugeMetricFamily(
            "orpheus_upstream_queue_hint",
            "The upstream's last reported queue depth, faded by age",
            labels=["upstream"],
        )
        latency = GaugeMetricFamily(
            "orpheus_upstream_latency_estimate_seconds",
            "The router's time-to-first-audio estimate for the upstream",
            labels=["upstream"],
        )
        for snap in snapshots:
            for name, _ in _COUNTERS:
                counters[name].add_metric([snap.url], getattr(snap, name))
            for state in BREAKER_STATES:
                value = 1.0 if snap.breaker_state == state else 0.0
                breaker.add_metric([snap.url, state], value)
            healthy.add_metric([snap.url], 1.0 if self._healthy(snap) else 0.0)
            in_flight.add_metric([snap.url], snap.in_flight)
            queue_hint.add_metric([snap.url], snap.queue_hint)
            if snap.latency_estimate_s is not None:
                latency.add_metric([snap.url], snap.latency_estimate_s)
        yield from counters.values()
        yield from (breaker, healthy, in_flight, queue_hint, latency)
        yield from self.time_to_first_audio.collect()
