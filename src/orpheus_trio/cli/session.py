"""A client session for a command: remote services, or the embedded server.

With no URL, the reference server runs in-process on 127.0.0.1, port 0, with
the espeak engine, or with the orpheus engine when ``--model``/``--snac`` name
a checkpoint (on-box synthesis), and the command talks to it over real HTTP
through the full client stack (routing, breaker, frames decoder), exactly as
it would to a remote service. Leaving the session closes the client, then
stops the server.

:func:`speech` streams text through a session, split into pieces when long
(``text.split`` + ``text.longtext``), noting which endpoint served each piece.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import trio

from .._util.groups import single_exception
from ..client import OrpheusTTS
from ..text.longtext import ordered_stream
from ..text.split import SplitMode, split_for_synthesis
from .options import ConnectionSettings, OnBoxModel, UsageError

if TYPE_CHECKING:
    from ..server.engine import Engine

__all__ = [
    "EmbeddedServerUnavailable",
    "PieceServed",
    "Session",
    "open_session",
    "speech",
]


class EmbeddedServerUnavailable(RuntimeError):
    """The embedded server could not start (a missing extra, espeak-ng or the model failed to load)."""


@dataclass(frozen=True, slots=True)
class PieceServed:
    endpoint: str
    request_id: str
    ttfb_s: float


@dataclass(slots=True)
class Session:
    client: OrpheusTTS
    #: The embedded server's engine (``espeak``, ``orpheus``); ``None`` for remote services.
    engine: str | None = None
    #: Filled by :func:`speech`, in piece order of arrival.
    served: list[PieceServed] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        return self.engine is not None

    @property
    def base_urls(self) -> tuple[str, ...]:
        return self.client.base_urls


def _catalog_args(settings: ConnectionSettings) -> argparse.Namespace:
    """The embedded server's catalog flags, as ``serve`` reads them."""
    return argparse.Namespace(
        model_family=settings.model_family, voice_alias=list(settings.voice_aliases),
        voice_alias_file=None, voices=None,
    )  # fmt: skip


def _load_espeak(settings: ConnectionSettings) -> Engine:
    # The package is installed from a checkout (it is not published), so name the checkout form.
    hint = (
        "pass --url to use a running service, or install the server extra "
        "from the checkout: pip install '.[server]'"
    )
    try:
        from ..server.engines.espeak import EspeakEngine
    except ImportError as error:
        raise EmbeddedServerUnavailable(
            f"the embedded server needs {error.name or error}; {hint}"
        ) from error
    from ..server.engines.orpheus import alias_overrides
    from ..voices import FAMILIES

    family = settings.model_family
    if family is not None and family not in FAMILIES:
        raise UsageError(f"--model-family: unknown family {family!r}; known: {', '.join(FAMILIES)}")
    try:
        voices = [v.name for v in FAMILIES[family].voices] if family else None
        return EspeakEngine(voices or None, aliases=alias_overrides(_catalog_args(settings)))
    except ValueError as error:
        raise UsageError(str(error)) from None
    except (OSError, RuntimeError) as error:
        raise EmbeddedServerUnavailable(
            f"espeak-ng could not be loaded ({error}); {hint}"
        ) from error


def _load_orpheus(on_box: OnBoxModel, settings: ConnectionSettings) -> Engine:
    hint = "install the local and server extras from the checkout: pip install '.[local,server]'"
    try:
        from ..local.hub import Piece, locate

        # Before torch and transformers load (seconds): a checkpoint that cannot be had fails now.
        pieces = [Piece("SNAC decoder", on_box.snac)]
        if on_box.model is not None:
            pieces.append(Piece("Orpheus model", on_box.model))
        if on_box.tokenizer is not None:
            pieces.append(Piece("tokenizer", on_box.tokenizer, marker="tokenizer_config.json"))
        locate(pieces)
        _quiet_loading_bars()
        from ..server.engines.orpheus import catalog_from_args

        checkpoint = on_box.model if on_box.model is not None else on_box.llm_model
        catalog = catalog_from_args(_catalog_args(settings), checkpoint=checkpoint)
        # torch and the rest of the local extra are imported as the engine loads.
        if on_box.llm_url is not None:
            from ..server.engines import orpheus_remote

            return orpheus_remote.load(
                on_box.llm_url,
                on_box.snac,
                llm_model=on_box.llm_model,
                llm_api_key=on_box.llm_api_key,
                tokenizer=on_box.tokenizer,
                device=on_box.device,
                voices=catalog,
            )
        from ..server.engines.orpheus import OrpheusEngine

        assert on_box.model is not None
        return OrpheusEngine.load(
            on_box.model, on_box.snac, tokenizer=on_box.tokenizer, device=on_box.device, dtype=on_box.dtype,
            voices=catalog,
        )
    except ImportError as error:
        raise EmbeddedServerUnavailable(
            f"on-box synthesis needs {error.name or error}; {hint}"
        ) from error
    except (OSError, ValueError) as error:  # a missing checkpoint, a bad device or dtype
        raise EmbeddedServerUnavailable(f"the model could not be loaded: {error}") from error


def _quiet_loading_bars() -> None:
    """No "Loading weights" bar from transformers in a command's output; the hub's
    download bars stay (a first download takes minutes and should say so)."""
    from huggingface_hub.utils.tqdm import enable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # it turns the hub's off too,
    enable_progress_bars()  # so they are turned back on


@asynccontextmanager
async def open_session(settings: ConnectionSettings) -> AsyncIterator[Session]:
    """A connected client; the embedded server runs for as long as the session when no URL is set."""
    if settings.urls:
        async with _client(settings.urls, settings) as client:
            yield Session(client)
        return
    engine = _load_orpheus(settings.on_box, settings) if settings.on_box else _load_espeak(settings)
    from ..server import ServerConfig, serve  # present: the engine loaded, with the server extra

    config = ServerConfig(host="127.0.0.1", port=0)
    if settings.on_box:
        # A model on the user's own CPU may take minutes for a paragraph: give
        # each request the server's cap, not its 60 s default (--timeout-s still sets one).
        config = replace(config, default_timeout_s=config.max_timeout_s)
    # Once it is up, the server is shielded from the command's own cancellation
    # (Ctrl-C): it stops after the client has closed, so no request of ours sees it
    # vanish first. Not while it starts: a task that has not called ``started``
    # when its parent is cancelled must end on its own, and a shielded one never would.
    server_scope = trio.CancelScope()

    async def run_server(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        with server_scope:
            await serve(engine, config, task_status=task_status)

    try:
        # The server task ends only by our cancel, so a group wraps the one error from the
        # command itself (or a server that failed to start).
        with single_exception():
            async with trio.open_nursery() as nursery:
                try:
                    base_url: str = await nursery.start(run_server)
                    server_scope.shield = True
                    async with _client((base_url,), settings) as client:
                        yield Session(client, engine=engine.name)
                finally:
                    server_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await engine.aclose()


def _client(urls: tuple[str, ...], settings: ConnectionSettings) -> OrpheusTTS:
    return OrpheusTTS(
        urls,
        settings.api_key,
        hedge_ttfb_ms=settings.hedge_ttfb_ms,
        timeout_s=settings.timeout_s,
    )


def speech(
    session: Session,
    text: str,
    voice: str | None,
    params: dict[str, Any],
    *,
    split: SplitMode = "auto",
    prefetch: int = 1,
) -> AsyncGenerator[bytes, None]:
    """PCM for ``text``, long text split and prefetched; each piece's winner is noted in ``session.served``."""
    pieces = split_for_synthesis(text, split)

    async def stream_piece(piece: str) -> AsyncIterator[bytes]:
        async with session.client.open_stream(piece, voice, **params) as audio:
            session.served.append(
                PieceServed(audio.endpoint, audio.request_id, audio.ttfb_s)
            )
            async for pcm in audio:
                yield pcm

    return ordered_stream(pieces, stream_piece, prefetch=prefetch)
