"""``GET /v1/system`` (what this server is and how loaded) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..audio.pcm import SAMPLE_RATE
from .config import ServerConfig
from .engine import Engine, emotion_tags
from .exchange import Exchange, Receive, send_bytes
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics
from .slots import Slots
from .voices_api import system_fields, voices_document

__all__ = ["MetricsEndpoint", "SystemEndpoint", "VoicesEndpoint"]


class SystemEndpoint:
    """``/v1/system``; a gateway adds its own fields through ``extra``."""

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig,
        slots: Slots,
        extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        self._slots = slots
        self._extra = extra

    def info(self) -> dict[str, Any]:
        config, admission = self._config, self._slots.admission
        info = {
            "api": "v1",
            "server": config.server_name,
            "engine": self._engine.name,
            "sample_rate": SAMPLE_RATE,
            "channels": 1,
            "sample_format": "s16le",
            "voices": self._engine.voices(),
            "emotion_tags": emotion_tags(self._engine),
            "queue_depth": self._slots.reported_depth(admission.queued),
            "inflight": admission.running,
            "capacity": config.max_concurrency,
            "max_text_chars": config.max_text_chars,
            "default_timeout_s": config.default_timeout_s,
            "max_timeout_s": config.max_timeout_s,
            "draining": admission.draining,
        }
        info.update(system_fields(self._engine))
        if self._extra is not None:
            info.update(self._extra())
        return info

    async def __call__(self, headers: dict[str, str], receive: Receive, ex: Exchange) -> None:
        await send_bytes(ex, 200, json.dumps(self.info()).encode(), b"application/json")


class MetricsEndpoint:
    """``/metrics`` in Prometheus' text format."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def __call__(self, headers: dict[str, str], receive: Receive, ex: Exchange) -> None:
        await send_bytes(ex, 200, self._metrics.render(), METRICS_CONTENT_TYPE.encode())


class VoicesEndpoint:
    """``GET /v1/voices``: each voice (name, kind, language, engine) and the aliases."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def __call__(self, headers: dict[str, str], receive: Receive, ex: Exchange) -> None:
        body = json.dumps(voices_document(self._engine), ensure_ascii=False).encode()
        await send_bytes(ex, 200, body, b"application/json")
