"""Orpheus tokens from an inference engine: an OpenAI-compatible ``/v1/completions`` stream.

vLLM (``vllm serve``), SGLang and llama.cpp's ``llama-server`` run the Orpheus
LLM with continuous batching; :class:`RemoteLM` sends each utterance's prompt
with ``stream: true`` and hands the streamed pieces to the synthesizer, which
decodes them exactly as it decodes the on-box model's tokens (same frame
assembly, token-error rules and batching SNAC decoder). Pieces are the
``<custom_token_N>`` text the engines stream, or ids where an engine sends
them (``choices[0].token_ids``).

The prompt: with a tokenizer here, token ids (exactly the on-box prompt); without
one, the same prompt spelled as text (``<custom_token_3><|begin_of_text|>tara:
hello<|eot_id|><custom_token_4><custom_token_5><custom_token_1>``, the form
Canopy's own vLLM server sends), tokenized by the engine.

Cancellation: closing a :class:`RemoteTokens` closes its HTTP connection (a
response not read to its end is never pooled), which is how these engines
learn that a client left: they abort the sequence and free its slot.

Faults raise :class:`EngineRequestError` with the v1 ``code`` and the status a
server should answer with when no audio was sent yet: ``unavailable`` (503,
engine unreachable or loading), ``overloaded`` (429), ``invalid_request``
(400, the engine rejected the request's values), ``engine_error`` (502: any
other engine answer, a stream cut short or ending without a finish reason,
bad JSON, an engine-reported error mid-stream).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
import httpx

from ..errors import OrpheusError
from ..transports.base import ResponseStream, StreamRequest, Transport
from .llm import (
    END_OF_SPEECH,
    FinishReason,
    InvalidParameter,
    SamplingParams,
    prompt_ids,
    spoken_text,
)

__all__ = [
    "EngineRequestError",
    "EngineSamplingParams",
    "RemoteLM",
    "RemoteTokens",
    "SSEDecoder",
    "text_prompt",
]

#: ``<custom_token_N>`` text of the prompt's control ids (``128256 + N``), see :mod:`.llm`.
_START_OF_HUMAN = "<custom_token_3>"
_PROMPT_TEXT_SUFFIX = "<|eot_id|><custom_token_4><custom_token_5><custom_token_1>"
_END_OF_SPEECH_TEXT = "<custom_token_2>"
#: Prompt tokens beyond the prompt's characters or ids that a penalty window may need.
_PROMPT_WINDOW_SLACK = 64
#: After ``[DONE]``, how long and how many reads to wait for the body's end (to pool the connection).
_END_OF_BODY_WAIT_S = 0.25
_END_OF_BODY_READS = 4
#: An SSE line longer than this is a broken engine, not a token piece.
MAX_EVENT_BYTES = 1 << 20


def text_prompt(text: str, voice: str | None = None) -> str:
    """The Orpheus prompt as text, for an engine that tokenizes it itself."""
    return f"{_START_OF_HUMAN}<|begin_of_text|>{spoken_text(text, voice)}{_PROMPT_TEXT_SUFFIX}"


class EngineRequestError(OrpheusError):
    """The engine could not be reached, refused the request, or its stream broke.

    ``code``/``status``: the v1 error a server answers with before any audio;
    ``retry_after_s``: the engine's ``Retry-After``, if it sent one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int,
        retry_after_s: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True, slots=True)
class EngineSamplingParams(SamplingParams):
    """:class:`SamplingParams` plus ``stop`` (strings that end the reply; at most 4)."""

    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        SamplingParams.__post_init__(self)
        stop: object = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, list | tuple) or not all(
            isinstance(s, str) and s for s in stop
        ):
            raise InvalidParameter("stop", "must be a non-empty string or a list of them")
        if len(stop) > 4:
            raise InvalidParameter("stop", f"at most 4 strings, got {len(stop)}")
        object.__setattr__(self, "stop", tuple(stop))


def engine_request_body(
    prompt: Sequence[int] | str, params: SamplingParams, model: str | None
) -> dict[str, Any]:
    """The ``/v1/completions`` body for one utterance.

    ``repetition_penalty`` is vLLM's and SGLang's name; ``repeat_penalty`` with
    a ``repeat_last_n`` window covering the prompt and the whole reply (as
    ``transformers`` and vLLM apply it) is llama.cpp's. Each engine ignores the
    other's names. ``top_k`` 0 (off) is left out: engines disagree on how to say
    "off". ``samplers`` is llama.cpp's sampler chain, named in full because its
    default chain adds what the request did not ask for (top_k 40, min_p 0.05)
    and applies the temperature last: this is the on-box order (penalty,
    temperature, top_k, top_p) with only the samplers the request turns on.
    """
    stop = [_END_OF_SPEECH_TEXT, *getattr(params, "stop", ())]
    body: dict[str, Any] = {
        "prompt": prompt if isinstance(prompt, str) else [int(i) for i in prompt],
        "stream": True,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "repetition_penalty": params.repetition_penalty,
        "repeat_penalty": params.repetition_penalty,
        "repeat_last_n": params.max_tokens + len(prompt) + _PROMPT_WINDOW_SLACK,
        "stop": stop,
        "stop_token_ids": [END_OF_SPEECH],
        # llama-server: reuse a slot's cached prefix (a cloned voice's references); vLLM
        # does the same with --enable-prefix-caching.
        "cache_prompt": True,
    }
    body["samplers"] = [
        "penalties",
        "temperature",
        *(["top_k"] if params.top_k else []),
        *(["top_p"] if params.top_p < 1.0 else []),
    ]
    if model is not None:
        body["model"] = model
    if params.top_k:
        body["top_k"] = params.top_k
    if params.seed is not None:
        body["seed"] = params.seed
    return body


class SSEDecoder:
    """Sans-IO: body bytes in, server-sent-event ``data`` payloads out."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[str]:
        """The data of every event that ``data`` completed."""
        self._buffer += data
        events: list[str] = []
        while (end := self._buffer.find(b"\n")) != -1:
            line, self._buffer = self._buffer[:end].rstrip(b"\r"), self._buffer[end + 1 :]
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                self._data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
            elif field == b"error":  # llama-server's way to say it failed mid-stream
                self._data.append(json.dumps({"error": value.strip().decode("utf-8", "replace")}))
        if len(self._buffer) > self._max:
            raise EngineRequestError(
                "engine_error",
                f"the engine sent a line over {self._max} bytes: not a completions stream",
                status=502,
            )
        return events

    def close(self) -> list[str]:
        """End of body: an event not ended by a blank line still counts."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        return events


class RemoteTokens:
    """One completion's streamed pieces as a :class:`~.token_source.TokenStream`: per read,
    the text that arrived (``str``) or its ids (a tuple of ``int``).

    ``items`` counts tokens (ids, and ``<custom_token_N>`` in the text) received so far;
    ``reads``, the body reads that brought them.
    """

    #: Unread tokens wait in the socket (and the engine's send buffer) at no cost.
    reads_can_wait = True

    def __init__(self, lm: RemoteLM, body: dict[str, Any]) -> None:
        self._lm = lm
        self._body = body
        self._response: ResponseStream | None = None
        self._sse = SSEDecoder()
        self._pending: list[str | tuple[int, ...]] = []
        self._finish: FinishReason | None = None
        self._ended = False
        self._closed = False
        self.items = 0
        self.reads = 0

    @property
    def result(self) -> FinishReason | None:
        return self._finish if self._ended else None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str | tuple[int, ...]:
        while not self._pending:
            if self._ended or self._closed:
                raise StopAsyncIteration
            if self._response is None:
                self._response = await self._lm._open(self._body)
            await self._read_more(self._response)
        return self._pending.pop(0)

    async def _read_more(self, response: ResponseStream) -> None:
        try:
            data = await response.receive()
        except (httpx.TransportError, OrpheusError) as error:
            raise self._lm._fault(f"the engine's stream broke: {error}") from error
        self.reads += 1
        events = self._sse.feed(data) if data else self._sse.close()
        for event in events:
            self._take(event)
        if not data and not self._ended:
            if self._finish is None:
                raise self._lm._fault(
                    "the engine's stream ended without a finish reason (cut short)"
                )
            self._ended = True  # no [DONE]: the finish reason said it all

    def _take(self, event: str) -> None:
        if self._ended:
            return
        if event.strip() == "[DONE]":
            if self._finish is None:
                raise self._lm._fault("the engine's stream ended ([DONE]) without a finish reason")
            self._ended = True
            return
        try:
            chunk = json.loads(event)
        except ValueError:
            raise self._lm._fault(f"the engine sent an event that is not JSON: {event[:80]!r}") from None
        if not isinstance(chunk, dict):
            raise self._lm._fault(f"the engine sent an event that is not an object: {event[:80]!r}")
        if "error" in chunk:
            raise self._lm._fault(f"the engine reported an error: {_error_text(chunk['error'])}")
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return  # e.g. a closing usage-only chunk
        choice = choices[0]
        if not isinstance(choice, dict):
            raise self._lm._fault(f"the engine sent a choice that is not an object: {choice!r:.80}")
        ids = choice.get("token_ids")
        if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            if ids:
                pending = self._pending
                if pending and isinstance(pending[-1], tuple):
                    pending[-1] += tuple(ids)
                else:
                    pending.append(tuple(ids))
                self.items += len(ids)
        else:
            text = choice.get("text")
            if not isinstance(text, str):
                raise self._lm._fault(f"the engine sent a choice without text: {choice!r:.80}")
            if text:
                # What arrived together is handed on together: one wake-up of the
                # decoding task per read, not per token (ids likewise, as a tuple).
                pending = self._pending
                if pending and isinstance(pending[-1], str):
                    pending[-1] += text
                else:
                    pending.append(text)
                self.items += text.count(">")  # each <custom_token_N> ends with one
        reason = choice.get("finish_reason")
        if reason is None:
            return
        if reason not in ("stop", "length"):
            raise self._lm._fault(f"the engine ended the reply with finish_reason {reason!r}")
        self._finish = reason  # the reply is complete; read on to [DONE] (or the end)

    async def aclose(self) -> None:
        """Close the HTTP stream now: the engine sees the connection go and aborts.

        A reply that ended (``[DONE]`` or its finish reason) is read to the
        body's end first, at most the chunked body's last chunk, so the
        connection goes back to the pool for the next utterance. An engine that
        holds the body open costs this connection (closed, not pooled), never
        the reply.
        """
        self._closed = True
        response, self._response = self._response, None
        if response is None:
            return
        try:
            if self._ended:
                with anyio.move_on_after(_END_OF_BODY_WAIT_S):
                    for _ in range(_END_OF_BODY_READS):
                        if not await response.receive():
                            break
        except (httpx.TransportError, OrpheusError):
            pass  # the reply is complete; only the connection is lost
        finally:
            await response.aclose()


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


class RemoteLM:
    """Orpheus on an inference engine's OpenAI-compatible completions endpoint.

    ``url``: the engine's base URL (``http://host:8000`` or ``.../v1``).
    ``model``: the engine's model name (vLLM and SGLang check it; llama-server
    serves whatever it loaded). ``api_key``: sent as ``Authorization: Bearer``.
    ``tokenizer``: the Orpheus tokenizer (directory or hub id) to send prompts
    as ids; without it the prompt is text. ``max_connections``: streams open
    to the engine at once (one per utterance).
    """

    params_type: type[SamplingParams] = EngineSamplingParams

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        tokenizer: str | os.PathLike[str] | Any | None = None,
        local_files_only: bool = False,
        transport: Transport | None = None,
        max_connections: int = 256,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"llm_url must be an http(s) URL like http://127.0.0.1:8000, got {url!r}")
        path = parts.path.rstrip("/").removesuffix("/v1")
        self.url = f"{parts.scheme}://{parts.netloc}{path}"
        self.model = model
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        if tokenizer is not None and isinstance(tokenizer, str | os.PathLike):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=local_files_only)
        self.tokenizer = tokenizer
        if transport is None:
            from ..transports.trio import TrioTransport

            transport = TrioTransport(
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                max_connections_per_endpoint=max_connections,
            )
        self._transport = transport

    def prompt_ids(self, text: str, voice: str | None = None) -> Sequence[int] | str:
        """Token ids with a tokenizer here, else the prompt as text."""
        if self.tokenizer is None:
            return text_prompt(text, voice)
        return prompt_ids(self.tokenizer, text, voice)

    def check_fits(self, prompt_length: int, params: SamplingParams) -> None:
        """The engine knows its context; it answers 400 when the request does not fit."""

    def open_tokens(self, prompt: Sequence[int] | str, params: SamplingParams) -> RemoteTokens:
        return RemoteTokens(self, engine_request_body(prompt, params, self.model))

    async def _open(self, body: Mapping[str, Any]) -> ResponseStream:
        request = StreamRequest(self.url, "/v1/completions", self._headers, json.dumps(body).encode())
        try:
            response = await self._transport.open_stream(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise EngineRequestError(
                "unavailable", f"the LLM engine at {self.url} is unreachable: {error}", status=503
            ) from error
        except (httpx.TransportError, OrpheusError) as error:
            raise self._fault(f"the request to the engine failed: {error}") from error
        if response.status == 200:
            return response
        try:
            detail = await _read_some(response)
        finally:
            await response.aclose()
        raise _status_error(self.url, response.status, response.headers, detail)

    def _fault(self, message: str) -> EngineRequestError:
        return EngineRequestError("engine_error", f"{message} ({self.url})", status=502)

    async def aclose(self) -> None:
        await self._transport.aclose()


async def _read_some(response: ResponseStream, limit: int = 4096) -> str:
    data = b""
    try:
        while len(data) < limit and (piece := await response.receive()):
            data += piece
    except (httpx.TransportError, OrpheusError):
        pass  # the status says enough
    text = data[:limit].decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(parsed, dict) and "error" in parsed:
        return _error_text(parsed["error"])[:300]
    return text.strip()[:300]


def _status_error(url: str, status: int, headers: Mapping[str, str], detail: str) -> EngineRequestError:
    said = f"the LLM engine at {url} answered {status}: {detail or '(no detail)'}"
    if status == 503:
        return EngineRequestError("unavailable", said, status=503, retry_after_s=_retry_after(headers))
    if status == 429:
        return EngineRequestError("overloaded", said, status=429, retry_after_s=_retry_after(headers) or 1.0)
    if status in (400, 413, 422):
        return EngineRequestError("invalid_request", said, status=400)
    return EngineRequestError("engine_error", said, status=502)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
