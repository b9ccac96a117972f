"""``POST /v1/tts/stream``: admission, the deadline, streaming and the caller leaving.

The request is read and checked (:mod:`.requests`), admitted or refused
(:mod:`.slots`), and run under its deadline, counted from when it arrived,
while a second task watches for the caller to leave and cancels the work if
it does. The closing frame is written outside the request's scopes, so a
deadline or a shutdown never cuts it (:mod:`.v1_stream`).
"""

from __future__ import annotations

import math
from contextlib import aclosing
from functools import partial

import trio

from .admission import Ticket
from .config import ServerConfig
from .engine import AbortStream, Engine, EngineError
from .exchange import Exchange, HTTPError, Receive
from .requests import SynthesisRequest, check_content_type, parse_synthesis_body, read_body
from .slots import Slots
from .v1_stream import StreamWriter
from .voices_api import request_voice

__all__ = ["SynthesisHandler"]


class SynthesisHandler:
    """The v1 synthesis handler; ``/v1/audio/speech`` runs it too (:mod:`.openai_speech`)."""

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig,
        slots: Slots,
        writer: StreamWriter,
    ) -> None:
        self._engine = engine
        self._config = config
        self._slots = slots
        self._writer = writer

    async def __call__(self, headers: dict[str, str], receive: Receive, ex: Exchange) -> None:
        if self._slots.admission.draining:
            raise HTTPError(503, "draining", "server is shutting down", close=True)
        check_content_type(headers)
        config = self._config
        body = await read_body(
            headers, receive, limit=config.max_body_bytes, read_timeout_s=config.read_timeout_s
        )
        request = parse_synthesis_body(
            body,
            max_text_chars=config.max_text_chars,
            default_timeout_s=config.default_timeout_s,
            max_timeout_s=config.max_timeout_s,
            validate=self._engine.validate,
            resolve_voice=partial(request_voice, self._engine),
        )
        ex.extra.update(voice=request.voice, text_chars=len(request.text))
        ticket = self._slots.admit()
        ex.queue_depth = ticket.depth_at_admission
        rejection: HTTPError | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope, ex)
                try:
                    await self._run(ticket, request, ex)
                except HTTPError as error:
                    rejection = error  # raised below, not inside an exception group
                nursery.cancel_scope.cancel()
        finally:
            self._slots.release(ticket)
        if rejection is not None:
            raise rejection

    async def _run(self, ticket: Ticket, request: SynthesisRequest, ex: Exchange) -> None:
        outcome: EngineError | AbortStream | None = None
        with self._slots.cancellable_by_shutdown() as shutdown_scope:
            with trio.CancelScope(deadline=_deadline(request, ex)) as deadline_scope:
                await self._slots.wait_turn(ticket)
                try:
                    await self._stream(request, ex)
                except (EngineError, AbortStream) as error:
                    outcome = error
        writer = self._writer
        if shutdown_scope.cancelled_caught:
            await writer.end_with_error(ex, "cancelled", "the server is shutting down")
        elif deadline_scope.cancelled_caught:
            timeout_s = request.params.get("timeout_s")
            await writer.end_with_error(
                ex,
                "deadline_exceeded",
                f"deadline of {timeout_s} s passed after {ex.chunks} chunks",
            )
        elif isinstance(outcome, EngineError):
            if not ex.started and outcome.status is not None:
                raise HTTPError(
                    outcome.status,
                    outcome.code,
                    outcome.message,
                    param=outcome.param,
                    retry_after_s=outcome.retry_after_s,
                )
            await writer.end_with_error(ex, outcome.code, outcome.message)
        elif isinstance(outcome, AbortStream):
            # Returning with the body unfinished makes the server drop the connection.
            await writer.start(ex)
            ex.code = "cut"
        else:
            await writer.finish(ex)

    async def _stream(self, request: SynthesisRequest, ex: Exchange) -> None:
        pieces = self._engine.synthesize(request.text, request.voice, request.params)
        async with aclosing(pieces):
            async for piece in pieces:
                await self._writer.piece(ex, piece)


def _deadline(request: SynthesisRequest, ex: Exchange) -> float:
    """When the request's time is up, counted from its arrival.

    The engine may turn enforcement off by returning ``timeout_s=None`` (see engine.py).
    """
    deadline_s = request.params.get("timeout_s", request.timeout_s)
    return math.inf if deadline_s is None else ex.received_at + float(deadline_s)


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope, ex: Exchange) -> None:
    """Cancel the request's work as soon as the client goes away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if ex.finished:  # the server closes the stream after the last frame too
                return
            if not ex.started:
                ex.status = 499
            ex.code = ex.code or "client_disconnected"
            scope.cancel()
            return
