"""What the gateway knows about its workers from polling their ``/v1/system``.

The client's breaker and router track how attempts go; this adds what only the
worker can say: which voices it offers, whether it is draining, its load. A
worker is *healthy* when its last poll answered, it is not draining and its
breaker lets attempts through. ``/v1/system`` on the gateway offers the union
of the healthy workers' voices.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import trio

from ...client import EndpointSnapshot
from ...voices import Voice, VoiceCatalog, VoiceKind, is_voice_name
from .vocabulary import checked_count, checked_name, poll_error, poll_error_detail

__all__ = ["UpstreamStatus", "UpstreamWatch"]

SYSTEM_PATH = "/v1/system"
#: A worker's ``/v1/system`` answer is a few hundred bytes; past this it is broken.
MAX_SYSTEM_BYTES = 1 << 20

#: True in the poller's tasks: httpx's per-request INFO line ("HTTP Request:
#: GET .../v1/system 200") is dropped there, or a gateway logs every poll of
#: every worker (docs/server.md: routine polls are not logged).
_POLLING: ContextVar[bool] = ContextVar("orpheus_trio_polling", default=False)


class _QuietPolls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _POLLING.get()


_QUIET_POLLS = _QuietPolls()
_log = logging.getLogger("orpheus_trio.gateway")


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """A worker's last ``/v1/system`` answer, its fields checked (``error``: the
    category of why it had none, ``detail`` the error itself, for logs only)."""

    url: str
    reachable: bool = False
    draining: bool = False
    engine: str | None = None
    voices: tuple[str, ...] = ()
    queue_depth: int | None = None
    inflight: int | None = None
    capacity: int | None = None
    error: str | None = "not_polled"
    detail: str | None = None
    #: Voice and engine names it reported that are no names (:data:`~.vocabulary.NAME`).
    dropped_names: int = 0
    #: voice -> its language and kind, and alias -> voice, where the worker says
    #: (``/v1/system``'s ``voice_languages``, ``voice_kinds``, ``voice_aliases``).
    languages: Mapping[str, str] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_system(cls, url: str, info: Any) -> UpstreamStatus:
        """Read a ``/v1/system`` JSON answer (TypeError/ValueError if it is not one)."""
        if not isinstance(info, Mapping):
            raise TypeError("/v1/system did not answer a JSON object")
        voices = info.get("voices")
        if not isinstance(voices, list):
            raise TypeError("'voices' is not a list")
        # Voice names by the catalog's grammar (it takes Hindi's combining marks: ऋतिका).
        names = tuple(v for v in voices if is_voice_name(v))
        engine = checked_name(info.get("engine"))
        return cls(
            url=url,
            reachable=True,
            draining=info.get("draining") is True,
            engine=engine,
            voices=tuple(dict.fromkeys(names)),  # each once, in the worker's order
            queue_depth=checked_count(info.get("queue_depth")),
            inflight=checked_count(info.get("inflight")),
            capacity=checked_count(info.get("capacity")),
            error=None,
            dropped_names=len(voices) - len(names) + int(engine is None and "engine" in info),
            languages=_name_map(info, "voice_languages", _LANGUAGE.fullmatch),
            kinds=_name_map(info, "voice_kinds", _KINDS.__contains__),
            aliases=_name_map(info, "voice_aliases", is_voice_name),
        )


_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,2}")
_KINDS = frozenset({"stock", "custom", "espeak"})


def _name_map(info: Mapping[str, Any], key: str, valid: Callable[[str], Any]) -> dict[str, str]:
    """A worker's voice -> value map, rebuilt from what passes the grammar (absent: empty)."""
    given = info.get(key)
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError(f"{key!r} is not an object")
    return {
        name: value
        for name, value in given.items()
        if is_voice_name(name) and isinstance(value, str) and valid(value)
    }


class UpstreamWatch:
    """Polls every worker's ``/v1/system`` every ``interval_s`` (``watch`` runs the loop).

    Each poll of a worker gets ``timeout_s`` in all (a worker that trickles its
    answer must not hold up the others' news, nor the gateway's start).
    ``verify``: TLS settings, the same as the client's (an ``ssl.SSLContext``,
    or ``False`` for no checks). Proxy settings from the environment are not
    used: the poll goes where the requests go, and the key goes nowhere else.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        api_key: str | None = None,
        interval_s: float = 2.0,
        timeout_s: float = 2.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        if not interval_s > 0 or not timeout_s > 0:
            raise ValueError("interval_s and timeout_s must be > 0")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.statuses = {url: UpstreamStatus(url) for url in urls}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            headers=headers, timeout=timeout_s, verify=verify, trust_env=False
        )
        logging.getLogger("httpx").addFilter(_QUIET_POLLS)  # once: filters are a set

    async def watch(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll once, report started, then poll every ``interval_s`` until cancelled."""
        await self.poll()
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            await self.poll()

    async def poll(self) -> None:
        """Ask every worker at once; each answer (or failure) replaces its status."""
        token = _POLLING.set(True)  # the tasks below inherit it
        try:
            async with trio.open_nursery() as nursery:
                for url in self.statuses:
                    nursery.start_soon(self._poll_one, url)
        finally:
            _POLLING.reset(token)

    async def _poll_one(self, url: str) -> None:
        try:
            with trio.fail_after(self.timeout_s):
                info = await self._fetch(url)
            status = UpstreamStatus.from_system(url, info)
        # RecursionError: JSON nested too deep; a broken worker must not stop the watch.
        except (
            trio.TooSlowError, httpx.HTTPError, TypeError, ValueError, RecursionError
        ) as error:
            detail = poll_error_detail(error)
            if isinstance(error, trio.TooSlowError):
                detail = f"no whole answer within {self.timeout_s:g} s"
            status = UpstreamStatus(url, error=poll_error(error), detail=detail)
        if status.dropped_names > self.statuses[url].dropped_names:
            # Once, not every poll; the values are not logged: they may be anything.
            _log.warning(
                "upstream %s: dropped %d voice or engine names that are not names "
                "(docs/gateway.md)", url, status.dropped_names,
            )  # fmt: skip
        self.statuses[url] = status

    async def _fetch(self, url: str) -> Any:
        async with self._http.stream("GET", url + SYSTEM_PATH) as response:
            response.raise_for_status()
            body = bytearray()
            # Too large: cancel, not raise. Raising here would leave httpx's chain
            # of body generators suspended until garbage collection; a
            # cancellation ends them all inside the next read, closing the
            # connection with them (a timeout or the gateway stopping does the same).
            with trio.CancelScope() as too_large:
                async for data in response.aiter_bytes():
                    body += data
                    if len(body) > MAX_SYSTEM_BYTES:
                        too_large.cancel()
        if len(body) > MAX_SYSTEM_BYTES:
            raise ValueError(f"the answer is too large (over {MAX_SYSTEM_BYTES} bytes)")
        return json.loads(body)

    def healthy(self, snapshot: EndpointSnapshot) -> bool:
        status = self.statuses[snapshot.url]
        return (
            status.reachable
            and not status.draining
            and snapshot.breaker_state != "open"
        )

    def offering(self, voice: str | None) -> list[str] | None:
        """The workers that offer ``voice`` and are not draining, by their last poll.

        ``None`` (any worker) for the default voice, or when no worker is known
        to offer it: then the workers answer for themselves.
        """
        if voice is None:
            return None
        urls = [
            url
            for url, status in self.statuses.items()
            if voice in status.voices and not status.draining
        ]
        return urls or None

    def catalog(self, snapshots: Sequence[EndpointSnapshot]) -> VoiceCatalog | None:
        """The healthy workers' voices, in their order, with the language and kind each
        says, and their aliases (the first worker's word wins); ``None``: none known."""
        voices: dict[str, Voice] = {}
        aliases: dict[str, str] = {}
        for snapshot in snapshots:
            if not self.healthy(snapshot):
                continue
            status = self.statuses[snapshot.url]
            for name in status.voices:
                if name not in voices and is_voice_name(name):
                    kind = cast(VoiceKind, status.kinds.get(name, "stock"))
                    language = status.languages.get(name, "und")
                    voices[name] = Voice(name, language, kind, status.engine or "unknown")
            for alias, target in status.aliases.items():
                aliases.setdefault(alias, target)
        if not voices:
            return None
        usable = {a: v for a, v in aliases.items() if v in voices and a not in voices}
        return VoiceCatalog(tuple(voices.values()), usable)

    def voices(self, snapshots: Sequence[EndpointSnapshot]) -> list[str]:
        """The union of the healthy workers' voices, in the workers' order: the
        first is the first healthy worker's default voice."""
        voices: dict[str, None] = {}
        for snapshot in snapshots:
            if self.healthy(snapshot):
                voices.update(dict.fromkeys(self.statuses[snapshot.url].voices))
        return list(voices)

    async def aclose(self) -> None:
        await self._http.aclose()
