"""Orpheus tokens from an inference engine: its streamed completions API.

vLLM (``vllm serve``), SGLang and llama.cpp's ``llama-server`` run the Orpheus
LLM with continuous batching; :class:`RemoteLM` sends each utterance's prompt
with ``stream: true`` and hands the streamed tokens to the synthesizer, which
decodes them exactly as it decodes the on-box model's tokens (same frame
assembly, token-error rules and batching SNAC decoder).

Token ids, not text, wherever the engine can send them: a reply's text
depends on how the engine's tokenizer names and flags the audio tokens (vLLM
skips special tokens by default: a tokenizer without ``<custom_token_N>``
entries streams empty text). Which engine it is is asked once, from its
``GET /v1/models`` (``owned_by``), and logged:

- ``llama.cpp``: its own ``POST /completion`` with ``return_tokens`` (its
  OpenAI-compatible endpoint has no way to send ids);
- anything else (vLLM, SGLang, other OpenAI-compatible servers):
  ``POST /v1/completions`` with ``return_token_ids`` (vLLM >= 0.10.2, SGLang);
  the first reply shows whether the ids came (``choices[0].token_ids``); if not,
  the engine's text is read (``<custom_token_N>`` pieces, special tokens kept
  with ``skip_special_tokens: false``). That form is fixed for the engine from
  then on and logged; a later reply in the other form is an error.

The prompt: with a tokenizer here, token ids (exactly the on-box prompt); without
one, the same prompt spelled as text (``<custom_token_3><|begin_of_text|>tara:
hello<|eot_id|><custom_token_4><custom_token_5><custom_token_1>``, the form
Canopy's own vLLM server sends), tokenized by the engine.

The worker does not trust the engine to stop: it counts the tokens itself,
ends the reply at ``max_tokens`` (``"length"``) or at end of speech
(``"stop"``), and closes the engine's stream at once when the engine has not
ended it itself.

Cancellation: closing a :class:`RemoteTokens` closes its HTTP connection (a
response not read to its end is never pooled), which is how these engines
learn that a client left: they abort the sequence and free its slot.

Faults raise :class:`~.engine_faults.EngineRequestError` with the v1 ``code``,
the status a server answers with before any audio, and a message written
here (:mod:`.engine_faults`): nothing the engine wrote reaches a caller. The
engine's own text goes to the ``orpheus_trio.engine`` log, the API key
blanked out of it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx

from ..apikey import Secret
from ..errors import OrpheusError
from ..transports.base import ResponseStream, StreamRequest, Transport
from .engine_faults import EngineRequestError, Fault, fault_error, status_error
from .llm import (
    END_OF_SPEECH,
    FinishReason,
    InvalidParameter,
    SamplingParams,
    prompt_ids,
    spoken_text,
)
from .sse import MAX_EVENT_BYTES, SSEDecoder

__all__ = [
    "MAX_EVENT_BYTES",
    "EngineRequestError",
    "EngineSamplingParams",
    "RemoteLM",
    "RemoteTokens",
    "ReplyReader",
    "SSEDecoder",
    "TokenForm",
    "engine_context",
    "engine_kind",
    "engine_request_body",
    "text_prompt",
]

_log = logging.getLogger("orpheus_trio.engine")

#: ``<custom_token_N>`` text of the prompt's control ids (``128256 + N``), see :mod:`.llm`.
_START_OF_HUMAN = "<custom_token_3>"
_PROMPT_TEXT_SUFFIX = "<|eot_id|><custom_token_4><custom_token_5><custom_token_1>"
_END_OF_SPEECH_TEXT = "<custom_token_2>"
#: Prompt tokens beyond the prompt's characters or ids that a penalty window may need.
_PROMPT_WINDOW_SLACK = 64
#: After the reply's end, how long and how many reads to wait for the body's end (to pool the connection).
_END_OF_BODY_WAIT_S = 0.25
_END_OF_BODY_READS = 4
#: The ``/v1/models`` answer: how long it may take and how much of it is read.
_PROBE_TIMEOUT_S = 5.0
_PROBE_BYTES = 64 * 1024
#: How much of an engine's error text goes to the log.
_LOGGED_DETAIL_CHARS = 300

#: How the engine sends a reply's tokens: ``"ids"`` or ``"text"`` (``<custom_token_N>``).
TokenForm = Literal["ids", "text"]
#: The engines told apart; ``"openai"`` is any other OpenAI-compatible server.
EngineKind = Literal["vllm", "sglang", "llama.cpp", "openai"]
_Tokens = TypeVar("_Tokens", list[int], str)
_KINDS: dict[str, EngineKind] = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama.cpp"}


def text_prompt(text: str, voice: str | None = None) -> str:
    """The Orpheus prompt as text, for an engine that tokenizes it itself."""
    return f"{_START_OF_HUMAN}<|begin_of_text|>{spoken_text(text, voice)}{_PROMPT_TEXT_SUFFIX}"


def engine_kind(models: object) -> EngineKind:
    """Which engine answered ``GET /v1/models`` with ``models`` (its parsed JSON), from
    ``data[0].owned_by``; ``"openai"`` for anything not recognised."""
    data = models.get("data") if isinstance(models, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    owner = first.get("owned_by") if isinstance(first, dict) else None
    return _KINDS.get(owner, "openai") if isinstance(owner, str) else "openai"


def engine_context(models: object) -> int | None:
    """The context length an engine's ``GET /v1/models`` answer states (vLLM's
    ``data[0].max_model_len``), if it states a valid one."""
    data = models.get("data") if isinstance(models, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    length = first.get("max_model_len") if isinstance(first, dict) else None
    return length if type(length) is int and length > 0 else None


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
    prompt: Sequence[int] | str,
    params: SamplingParams,
    model: str | None,
    kind: EngineKind = "openai",
    *,
    ask_ids: bool = True,
) -> dict[str, Any]:
    """The completions body for one utterance, for an engine of ``kind``.

    ``repetition_penalty`` is vLLM's and SGLang's name; ``repeat_penalty`` with
    a ``repeat_last_n`` window covering the prompt and the whole reply (as
    ``transformers`` and vLLM apply it) is llama.cpp's. Each engine ignores the
    other's names. ``top_k`` 0 (off) is left out: engines disagree on how to say
    "off". ``samplers`` is llama.cpp's sampler chain, named in full because its
    default chain adds what the request did not ask for (top_k 40, min_p 0.05)
    and applies the temperature last: this is the on-box order (penalty,
    temperature, top_k, top_p) with only the samplers the request turns on.
    Token ids are asked for (unless ``ask_ids`` is false) as each engine names
    it: ``return_tokens`` (llama.cpp's ``/completion``), ``return_token_ids``
    (vLLM, SGLang).
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
    if kind == "llama.cpp":
        body["return_tokens"] = True
    elif ask_ids:
        body["return_token_ids"] = True
    if kind != "llama.cpp":
        body["skip_special_tokens"] = False  # the text form keeps <custom_token_N>
    if model is not None:
        body["model"] = model
    if params.top_k:
        body["top_k"] = params.top_k
    if params.seed is not None:
        body["seed"] = params.seed
    return body


class EngineFault(Exception):
    """Raised by :class:`ReplyReader`: a :class:`~.engine_faults.Fault` and, for the log
    only, what the engine sent."""

    def __init__(self, fault: Fault, detail: str = "", *, status: int | None = None) -> None:
        self.fault = fault
        self.detail = detail
        #: An error event's own HTTP status (vLLM streams a refused prompt as one), if valid.
        self.status = status
        super().__init__(fault.value)


class ReplyReader:
    """Sans-IO: one reply's event payloads in, tokens out, the reply's end enforced here.

    ``kind``: the engine's (``"llama.cpp"`` reads ``/completion``'s events, the
    others ``/v1/completions``'s). ``form``: how tokens come, ``None`` until the
    first choice shows it (then :attr:`form` says). ``take`` returns the ids or
    the text an event brought (trimmed at ``max_tokens`` and end of speech),
    raises :class:`EngineFault` for what no engine should send.

    ``finish``: ``"stop"`` or ``"length"`` once the reply ended (the engine's
    finish reason, or this reader's count); ``ended``: nothing more is taken;
    ``engine_ended``: the engine itself said the reply is over (so its body's
    end is near and the connection can be kept).
    """

    def __init__(self, kind: EngineKind, max_tokens: int, form: TokenForm | None) -> None:
        self.kind = kind
        self.max_tokens = max_tokens
        self.form: TokenForm | None = "ids" if kind == "llama.cpp" else form
        self.items = 0
        self.finish: FinishReason | None = None
        self.ended = False
        self.engine_ended = False

    def take(self, event: str) -> list[int] | str:
        """The tokens ``event`` brought (``[]`` or ``""`` when none)."""
        if self.ended:
            return []
        if event.strip() == "[DONE]":
            self.engine_ended = True
            if self.finish is None:
                raise EngineFault(Fault.DONE_WITHOUT_FINISH)
            self.ended = True
            return []
        try:
            chunk = json.loads(event)
        except ValueError:
            raise EngineFault(Fault.NOT_JSON, event) from None
        if not isinstance(chunk, dict):
            raise EngineFault(Fault.NOT_AN_OBJECT, event)
        if "error" in chunk:
            error = chunk["error"]
            code = error.get("code") if isinstance(error, dict) else None
            status = code if type(code) is int and 400 <= code <= 599 else None
            raise EngineFault(Fault.ERROR_EVENT, str(error), status=status)
        if self.kind == "llama.cpp":
            ids, text, reason = _native_choice(chunk)
        else:
            choices = chunk.get("choices")
            if not isinstance(choices, list) or not choices:
                return []  # e.g. a closing usage-only chunk
            ids, text, reason = _openai_choice(choices[0])
        if self.form is None:
            self.form = "ids" if ids is not None else "text"
        if self.form == "ids":
            if ids is None:
                raise EngineFault(Fault.FORM_CHANGED, "a reply without token ids")
            tokens: list[int] | str = self._ids(ids)
        else:
            if text is None:
                raise EngineFault(Fault.BAD_CHOICE, "a choice without text")
            tokens = self._text(text)
        if reason is not None:
            self.engine_ended = True
            if self.finish is None:
                self.finish = reason
            self.ended = True
        return tokens

    def _ids(self, ids: list[int]) -> list[int]:
        if END_OF_SPEECH in ids:
            ids = ids[: ids.index(END_OF_SPEECH)]
            self._end("stop")
        return self._count(ids, len(ids), lambda n: ids[:n])

    def _text(self, text: str) -> str:
        if (stop_at := text.find(_END_OF_SPEECH_TEXT)) != -1:
            text = text[:stop_at]
            self._end("stop")
        # Each <custom_token_N> ends with one ">"; stray text is the assembler's to reject.
        return self._count(text, text.count(">"), lambda n: text[: _nth(text, ">", n) + 1])

    def _count(self, tokens: _Tokens, count: int, first: Callable[[int], _Tokens]) -> _Tokens:
        """``tokens`` (``count`` of them) as far as ``max_tokens`` allows; ``first(n)`` cuts."""
        left = self.max_tokens - self.items
        if count > left:
            tokens, count = first(left), left
            self.finish, self.ended = "length", True
        elif count == left:
            self._end("length")
        self.items += count
        return tokens

    def _end(self, reason: FinishReason) -> None:
        if self.finish is None:
            self.finish = reason
        self.ended = True


def _nth(text: str, char: str, n: int) -> int:
    """Index of the ``n``-th ``char`` in ``text`` (``n`` >= 1, present); -1 for ``n`` 0."""
    at = -1
    for _ in range(n):
        at = text.index(char, at + 1)
    return at


def _token_ids(value: object) -> list[int] | None:
    if isinstance(value, list) and all(type(i) is int for i in value):
        return value
    return None


def _openai_choice(choice: object) -> tuple[list[int] | None, str | None, FinishReason | None]:
    if not isinstance(choice, dict):
        raise EngineFault(Fault.BAD_CHOICE, repr(choice))
    text = choice.get("text")
    reason = choice.get("finish_reason")
    if reason is not None and reason not in ("stop", "length"):
        raise EngineFault(Fault.BAD_FINISH, repr(reason))
    ids = choice.get("token_ids")
    if ids is not None and _token_ids(ids) is None:
        raise EngineFault(Fault.BAD_CHOICE, repr(ids))
    return _token_ids(ids), text if isinstance(text, str) else None, reason


def _native_choice(chunk: dict[str, Any]) -> tuple[list[int] | None, str | None, FinishReason | None]:
    """llama.cpp's ``/completion`` event: ``tokens``, ``content``, ``stop`` and ``stop_type``."""
    ids = _token_ids(chunk.get("tokens"))
    if ids is None:
        raise EngineFault(Fault.BAD_CHOICE, repr(chunk.get("tokens")))
    if chunk.get("stop") is not True:
        return ids, None, None
    stop_type = chunk.get("stop_type")
    if stop_type in ("eos", "word"):
        return ids, None, "stop"
    if stop_type == "limit":
        return ids, None, "length"
    raise EngineFault(Fault.BAD_FINISH, repr(stop_type))


class RemoteTokens:
    """One completion's streamed tokens as a :class:`~.token_source.TokenStream`: per read,
    the ids that arrived (a tuple of ``int``) or, from an engine that sends only
    text, the text (``str``).

    ``items`` counts tokens received so far; ``reads``, the body reads that brought them.
    """

    #: Unread tokens wait in the socket (and the engine's send buffer) at no cost.
    reads_can_wait = True

    def __init__(self, lm: RemoteLM, prompt: Sequence[int] | str, params: SamplingParams) -> None:
        self._lm = lm
        self._prompt = prompt
        self._params = params
        self._response: ResponseStream | None = None
        self._sse = SSEDecoder()
        self._reader: ReplyReader | None = None
        self._pending: list[str | tuple[int, ...]] = []
        self._closed = False
        self.reads = 0

    @property
    def items(self) -> int:
        return self._reader.items if self._reader is not None else 0

    @property
    def result(self) -> FinishReason | None:
        reader = self._reader
        return reader.finish if reader is not None and reader.ended else None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str | tuple[int, ...]:
        while not self._pending:
            reader = self._reader
            if self._closed or (reader is not None and reader.ended):
                raise StopAsyncIteration
            if self._response is None:
                kind = await self._lm.kind()
                if self._lm.text_only and kind == "llama.cpp":
                    kind = "openai"  # its /v1/completions: text only
                self._lm.check_context(self._prompt, self._params)
                self._reader = ReplyReader(kind, self._params.max_tokens, self._lm.token_form)
                body = engine_request_body(
                    self._prompt, self._params, self._lm.model, kind, ask_ids=not self._lm.text_only
                )
                self._response = await self._lm._open(body, kind)
            await self._read_more(self._response)
        return self._pending.pop(0)

    async def _read_more(self, response: ResponseStream) -> None:
        reader = self._reader
        assert reader is not None
        try:
            data = await response.receive()
        except (httpx.TransportError, OrpheusError) as error:
            raise self._lm._fault(Fault.STREAM_BROKE, str(error)) from error
        self.reads += 1
        events = self._sse.feed(data) if data else self._sse.close()
        # What arrived together is handed on together: one wake-up of the decoding task
        # per read, not per token.
        ids: list[int] = []
        texts: list[str] = []
        try:
            for event in events:
                tokens = reader.take(event)
                if isinstance(tokens, str):
                    texts.append(tokens)
                else:
                    ids += tokens
        except EngineFault as fault:
            if fault.status is not None:  # its status class, as for an answer before the stream
                self._lm._fault(fault.fault, fault.detail)
                raise status_error(fault.status) from None
            raise self._lm._fault(fault.fault, fault.detail) from None
        if reader.form is not None:
            self._lm._learned(reader.form)
        if ids:
            self._pending.append(tuple(ids))
        elif texts and (text := "".join(texts)):
            self._pending.append(text)
        if not data and not reader.ended:
            if reader.finish is None:
                raise self._lm._fault(Fault.NO_FINISH)
            reader.ended = True  # no [DONE]: the finish reason said it all
        if reader.ended and not reader.engine_ended:
            # This side ended the reply (max_tokens, end of speech): the engine is told now.
            self._response = None
            await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP stream now: the engine sees the connection go and aborts.

        A reply the engine ended (``[DONE]`` or its finish reason) is read to the
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
            if self._reader is not None and self._reader.ended and self._reader.engine_ended:
                with anyio.move_on_after(_END_OF_BODY_WAIT_S):
                    for _ in range(_END_OF_BODY_READS):
                        if not await response.receive():
                            break
        except (httpx.TransportError, OrpheusError):
            pass  # the reply is complete; only the connection is lost
        finally:
            await response.aclose()


class RemoteLM:
    """Orpheus on an inference engine's completions endpoint.

    ``url``: the engine's base URL (``http://host:8000`` or ``.../v1``).
    ``model``: the engine's model name (vLLM and SGLang check it; llama-server
    serves whatever it loaded). ``api_key``: sent as ``Authorization: Bearer``.
    ``tokenizer``: the Orpheus tokenizer (directory or hub id) to send prompts
    as ids; without it the prompt is text. ``max_connections``: streams open
    to the engine at once (one per utterance).

    ``engine``: ``"auto"`` asks the engine which it is (``GET /v1/models``,
    once); ``"vllm"``, ``"sglang"``, ``"llama.cpp"`` or ``"openai"`` (any other
    OpenAI-compatible server) skip the question. ``token_form``: ``"ids"`` or
    ``"text"`` (never ask for ids) instead of learning it from the first reply.
    :attr:`engine` and :attr:`token_form` say what was decided.
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
        engine: EngineKind | Literal["auto"] = "auto",
        token_form: TokenForm | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"llm_url must be an http(s) URL like http://127.0.0.1:8000, got {url!r}")
        if engine not in ("auto", "vllm", "sglang", "llama.cpp", "openai"):
            raise ValueError(f"engine must be auto, vllm, sglang, llama.cpp or openai, got {engine!r}")
        path = parts.path.rstrip("/").removesuffix("/v1")
        self.url = f"{parts.scheme}://{parts.netloc}{path}"
        self.model = model
        self.engine: EngineKind | None = None if engine == "auto" else engine
        if token_form not in (None, "ids", "text"):
            raise ValueError(f"token_form must be ids, text or None, got {token_form!r}")
        self.token_form: TokenForm | None = token_form
        #: The context length the engine states (vLLM's ``max_model_len``), once asked.
        self.max_model_len: int | None = None
        #: Never ask for ids (``token_form="text"``): the engine's text path, as a test or a fallback.
        self.text_only = token_form == "text"
        self._kind_lock = anyio.Lock()
        self._secret = Secret(api_key or "")
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
        return RemoteTokens(self, prompt, params)

    async def kind(self) -> EngineKind:
        """Which engine this is: asked once (``GET /v1/models``), then kept."""
        if self.engine is None:
            async with self._kind_lock:
                if self.engine is None:
                    kind = await self._ask_kind()
                    if kind is None:  # no answer this time: ask again with the next reply
                        return "openai"
                    self.engine = kind
                    _log.info("inference engine at %s: %s", self.url, kind)
        return self.engine

    async def _ask_kind(self) -> EngineKind | None:
        """The engine's kind from its ``/v1/models``; ``"openai"`` for an answer that does not
        say; ``None`` when it did not answer 200 (loading, refusing the key)."""
        request = StreamRequest(self.url, "/v1/models", self._headers, b"", method="GET")
        data = b""
        response: ResponseStream | None = None
        try:
            with anyio.move_on_after(_PROBE_TIMEOUT_S):
                response = await self._transport.open_stream(request)
                while len(data) < _PROBE_BYTES and (piece := await response.receive()):
                    data += piece
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise self._fault(Fault.UNREACHABLE, str(error)) from error
        except (httpx.TransportError, OrpheusError) as error:
            _log.warning("inference engine at %s: /v1/models failed: %s", self.url, self._shown(str(error)))
        finally:
            if response is not None:
                await response.aclose()
        if response is None or response.status != 200:
            return None
        try:
            models = json.loads(data)
        except ValueError:
            return "openai"
        self.max_model_len = engine_context(models)
        return engine_kind(models)

    def check_context(self, prompt: Sequence[int] | str, params: SamplingParams) -> None:
        """A prompt of ids whose length plus ``max_tokens`` passes the context the engine
        stated is a 400 here, as on the on-box path: vLLM would silently shorten the reply."""
        limit = self.max_model_len
        if limit is not None and not isinstance(prompt, str) and len(prompt) + params.max_tokens > limit:
            raise EngineRequestError(
                "invalid_request",
                f"the prompt ({len(prompt)} tokens) plus max_tokens ({params.max_tokens}) exceed the "
                f"inference engine's context of {limit} tokens",
                status=400,
            )

    def _learned(self, form: TokenForm) -> None:
        """The first reply showed how this engine sends tokens: kept for every later one."""
        if self.token_form is None:
            self.token_form = form
            _log.info("inference engine at %s (%s): tokens arrive as %s", self.url, self.engine, form)

    async def _open(self, body: Mapping[str, Any], kind: EngineKind) -> ResponseStream:
        path = "/completion" if kind == "llama.cpp" else "/v1/completions"
        request = StreamRequest(self.url, path, self._headers, json.dumps(body).encode())
        try:
            response = await self._transport.open_stream(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise self._fault(Fault.UNREACHABLE, str(error)) from error
        except (httpx.TransportError, OrpheusError) as error:
            raise self._fault(Fault.REQUEST_FAILED, str(error)) from error
        if response.status == 200:
            return response
        try:
            detail = await _read_some(response)
        finally:
            await response.aclose()
        _log.warning(
            "inference engine at %s answered %d: %s", self.url, response.status, self._shown(detail)
        )
        raise status_error(response.status, _retry_after(response.headers))

    def _fault(self, fault: Fault, detail: str = "") -> EngineRequestError:
        """The caller's error for ``fault``; what the engine sent goes to the log."""
        _log.warning("inference engine at %s: %s%s", self.url, fault.value, f": {self._shown(detail)}" if detail else "")
        return fault_error(fault)

    def _shown(self, text: str) -> str:
        """Engine text for the log: cut short, the API key blanked out."""
        return self._secret.redact(text)[:_LOGGED_DETAIL_CHARS]

    async def aclose(self) -> None:
        await self._transport.aclose()


async def _read_some(response: ResponseStream, limit: int = 4096) -> str:
    data = b""
    try:
        while len(data) < limit and (piece := await response.receive()):
            data += piece
    except (httpx.TransportError, OrpheusError):
        pass  # the status says enough
    return data[:limit].decode("utf-8", "replace").strip()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds <= 3600 else None
