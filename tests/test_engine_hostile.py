"""The engine worker against a hostile or broken inference engine (issue 30, engine items).

Nothing the engine writes reaches a caller (its error text may echo the
worker's ``Authorization`` header); the worker ends a reply at ``max_tokens``
itself; the SSE reader holds a bounded number of bytes and works in linear
time, so a flood neither grows the worker nor stalls its event loop.
"""

from __future__ import annotations

import json
import logging
import time
import tracemalloc
from typing import Any

import httpx
import pytest
import trio
from _support_faults import Conn, Reply, body
from _support_gateway import start_gateway
from _support_llm import audio_script, custom_token_text
from _support_server import StartServer, audio_of, parse_frames
from test_engine_remote import (
    DONE,
    FRAMES,
    completions,
    event,
    fake_engine,
    id_events,
    reference_pcm,
    remote_engine,
    speech_events,
)

from orpheus_trio.local.engine_client import (
    EngineRequestError,
    ReplyReader,
    SSEDecoder,
    engine_context,
    engine_kind,
)
from orpheus_trio.local.engine_faults import Fault, fault_error, status_error
from orpheus_trio.local.llm import END_OF_SPEECH
from orpheus_trio.local.tokens import FRAME_SAMPLES

KEY = "sk-engine-Zq7xW3vB9pL2mN8kR4tY6uH1"


# -- the error table (sans-IO) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine_status", "code", "status"),
    [
        (400, "invalid_request", 400),
        (413, "invalid_request", 400),
        (422, "invalid_request", 400),
        (429, "overloaded", 429),
        (503, "unavailable", 503),
        (401, "engine_error", 502),
        (403, "engine_error", 502),
        (404, "engine_error", 502),
        (500, "engine_error", 502),
        (502, "engine_error", 502),
        (418, "engine_error", 502),
    ],
)
def test_engine_statuses_map_to_v1_errors_in_the_worker_s_words(engine_status: int, code: str, status: int) -> None:
    error = status_error(engine_status, retry_after_s=7.0)
    assert (error.code, error.status) == (code, status)
    assert error.message.startswith("the inference engine ") and f"({engine_status})" in error.message
    assert error.retry_after_s == (7.0 if status in (429, 503) else None)
    assert status_error(429).retry_after_s == 1.0  # overloaded always says when to come back


@pytest.mark.parametrize("fault", list(Fault))
def test_stream_faults_are_502_except_an_unreachable_engine(fault: Fault) -> None:
    error = fault_error(fault)
    expected = ("unavailable", 503) if fault is Fault.UNREACHABLE else ("engine_error", 502)
    assert (error.code, error.status) == expected and error.message == fault.value


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ({"data": [{"id": "orpheus", "owned_by": "vllm"}]}, "vllm"),
        ({"data": [{"id": "orpheus", "owned_by": "sglang"}]}, "sglang"),
        ({"data": [{"id": "x.gguf", "owned_by": "llamacpp"}], "models": []}, "llama.cpp"),
        ({"data": [{"id": "m", "owned_by": "someone"}]}, "openai"),
        ({"data": []}, "openai"),
        ([1, 2], "openai"),
        ({"data": [{"owned_by": 3}]}, "openai"),
    ],
)
def test_the_engine_kind_comes_from_its_models_answer(answer: object, kind: str) -> None:
    assert engine_kind(answer) == kind


@pytest.mark.parametrize(
    ("answer", "length"),
    [
        ({"data": [{"owned_by": "vllm", "max_model_len": 1024}]}, 1024),
        ({"data": [{"owned_by": "vllm", "max_model_len": "1024"}]}, None),
        ({"data": [{"owned_by": "vllm", "max_model_len": -5}]}, None),
        ({"data": [{"owned_by": "vllm", "max_model_len": True}]}, None),
        ({"data": [{"owned_by": "llamacpp"}]}, None),
    ],
)
def test_the_engine_context_is_read_only_when_it_is_a_positive_int(answer: object, length: int | None) -> None:
    assert engine_context(answer) == length


# -- the reply's end, counted here ------------------------------------------------------------


def ids_event(ids: list[int], finish: str | None = None) -> str:
    return json.dumps({"choices": [{"text": "", "token_ids": ids, "finish_reason": finish}]})


def test_the_reader_cuts_ids_at_max_tokens_and_at_end_of_speech() -> None:
    tokens = audio_script(3)
    reader = ReplyReader("vllm", max_tokens=10, form=None)
    assert reader.take(ids_event(tokens[:7])) == tokens[:7] and reader.form == "ids"
    assert reader.take(ids_event(tokens[7:14])) == tokens[7:10]
    assert (reader.finish, reader.ended, reader.engine_ended, reader.items) == ("length", True, False, 10)
    assert reader.take(ids_event(tokens[14:])) == []  # nothing after the end
    stopped = ReplyReader("vllm", max_tokens=100, form="ids")
    assert stopped.take(ids_event([*tokens[:7], END_OF_SPEECH, *tokens[7:]])) == tokens[:7]
    assert (stopped.finish, stopped.ended, stopped.items) == ("stop", True, 7)


def test_the_reader_cuts_text_at_max_tokens_and_at_end_of_speech() -> None:
    text = [custom_token_text(t) for t in audio_script(2)]
    reader = ReplyReader("openai", max_tokens=5, form="text")
    chunk = json.dumps({"choices": [{"text": "".join(text), "finish_reason": None}]})
    assert reader.take(chunk) == "".join(text[:5]) and reader.finish == "length"
    stopped = ReplyReader("openai", max_tokens=50, form="text")
    chunk = json.dumps({"choices": [{"text": "".join(text[:3]) + "<custom_token_2>" + text[3], "finish_reason": None}]})
    assert stopped.take(chunk) == "".join(text[:3]) and (stopped.finish, stopped.items) == ("stop", 3)


def test_the_engine_s_own_end_at_max_tokens_keeps_its_connection() -> None:
    tokens = audio_script(1)
    reader = ReplyReader("vllm", max_tokens=7, form="ids")
    assert reader.take(ids_event(tokens, "length")) == tokens
    assert (reader.finish, reader.engine_ended) == ("length", True)


def test_llama_cpp_native_events_and_their_stop_types() -> None:
    for stop_type, reason in (("eos", "stop"), ("word", "stop"), ("limit", "length")):
        reader = ReplyReader("llama.cpp", max_tokens=100, form=None)
        assert reader.take(json.dumps({"content": "x", "tokens": [128266], "stop": False})) == [128266]
        assert reader.take(json.dumps({"content": "", "tokens": [], "stop": True, "stop_type": stop_type})) == []
        assert (reader.form, reader.finish, reader.engine_ended) == ("ids", reason, True)


def endless_ids(conns: list[Conn], closed_at: list[float]) -> Reply:
    """An engine that ignores max_tokens: audio ids forever, fast, until the worker hangs up."""

    async def reply(conn: Conn) -> None:
        conns.append(conn)
        await conn.send_stream_head()
        tokens = audio_script(1)
        try:
            while True:
                await conn.send_piece(event("", token_ids=tokens))
                if await conn.until_client_closes(0.002):
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        closed_at.append(trio.current_time())

    return reply


async def test_an_engine_that_ignores_max_tokens_is_cut_there_and_its_slot_freed(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    conns: list[Conn] = []
    closed_at: list[float] = []
    engine = await fake_engine(nursery, endless_ids(conns, closed_at), owned_by="vllm")
    server = await start_server(engine=remote_engine(engine.url))
    started = trio.current_time()
    with pytest.warns(UserWarning, match="max_tokens"):
        response = await post(server.base_url, max_tokens=70, timeout_s=60)
    frames = parse_frames(response.content)
    (metrics,) = [f for f in frames if "finish_reason" in f]
    assert metrics["finish_reason"] == "length" and metrics["truncated"] is True and metrics["tokens"] == 70
    assert frames[-1] == {"type": "eos", "chunks": len(audio_of(frames)), "samples": 10 * FRAME_SAMPLES}
    # The engine's stream was closed at max_tokens, seconds before any deadline.
    with trio.fail_after(3):
        while not closed_at:
            await trio.sleep(0.01)
    assert closed_at[0] - started < 10
    assert await engine.wait_connections_closed() == 0


async def post(base_url: str, **request: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        return await client.post("/v1/tts/stream", json={"text": "hello", **request})


# -- engine text never reaches a caller --------------------------------------------------------


def echoing(status_code: int) -> Reply:
    """An engine answering ``status_code`` with the request's head (its Authorization) as its error."""

    async def reply(conn: Conn) -> None:
        payload = json.dumps({"error": {"message": f"bad request; you sent {conn.head!r}"}}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        await conn.send_head(status_code, [*headers, ("Connection", "close")])
        await conn.stream.send_all(payload)

    return reply


def echoing_mid_stream(how: str) -> Reply:
    """An engine that streams some audio, then an error event echoing the request's head."""

    async def reply(conn: Conn) -> None:
        await conn.send_stream_head()
        for piece in speech_events(FRAMES, finish=None)[:35]:
            await conn.send_piece(piece)
        text = f"internal error at http://10.1.2.3:8000/v1; headers {conn.head!r}"
        if how == "sse error field":
            await conn.send_piece(b"error: " + text.encode() + b"\n\n")
        else:
            await conn.send_piece(b"data: " + json.dumps({"error": {"message": text}}).encode() + b"\n\n")
        await conn.end_body()

    return reply


async def echo_engine(nursery: trio.Nursery, reply: Reply) -> Any:
    engine = await fake_engine(nursery, reply)
    # Conn has no head of its own: hand each reply the head the server read for it.
    replies = engine.replies

    def with_head(index: int) -> Reply:
        inner = replies(index)

        async def reply_with_head(conn: Conn) -> None:
            conn.head = engine.heads[index]  # type: ignore[attr-defined]
            await inner(conn)

        return reply_with_head

    engine.replies = with_head
    return engine


@pytest.mark.parametrize("how", [400, 401, "sse error field", "data error event"])
async def test_engine_text_echoing_the_key_never_reaches_a_caller_directly_or_through_the_gateway(
    nursery: trio.Nursery, start_server: StartServer, caplog: pytest.LogCaptureFixture, how: int | str
) -> None:
    reply = echoing(how) if isinstance(how, int) else echoing_mid_stream(how)
    engine = await echo_engine(nursery, reply)
    worker = await start_server(engine=remote_engine(engine.url, api_key=KEY))
    gateway = await start_gateway(nursery, [worker.base_url], hedge_ttfb_ms=None)
    with caplog.at_level(logging.WARNING, "orpheus_trio.engine"):
        answers = [await post(worker.base_url)]
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as client:
            answers.append(await client.post("/v1/tts/stream", json={"text": "hello"}))
            if isinstance(how, int):  # (after audio, /v1/audio/speech can only cut its body short)
                answers.append(await client.post("/v1/audio/speech", json={"input": "hello", "voice": "tara"}))
    assert any(KEY.encode() in head for head, _ in completions(engine))  # the engine did get the key
    for answer in answers:
        shown = answer.content.decode("utf-8", "replace")
        for secret in (KEY, KEY[:12], KEY[-12:], "Authorization", "10.1.2.3", engine.url.split("//")[1]):
            assert secret.lower() not in shown.lower(), (answer.status_code, shown[-400:])
    if isinstance(how, int):
        assert answers[0].status_code == (400 if how == 400 else 502)
    else:
        assert answers[0].status_code == 200 and parse_frames(answers[0].content)[-1]["type"] == "error"
    # The worker's log has the engine's text, for its operator, with the key blanked out.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "orpheus_trio.engine")
    assert "Authorization" in logged and KEY not in logged and KEY[:12] not in logged


# -- the SSE reader: bounded and linear --------------------------------------------------------


def feed_all(decoder: SSEDecoder, data: bytes, piece: int = 65536) -> int:
    events = 0
    for at in range(0, len(data), piece):
        events += len(decoder.feed(data[at : at + piece]))
    return events


def test_bare_newlines_cost_linear_time() -> None:
    # The old reader sliced its whole buffer once per line: 2 MB of newlines took ~30 s of CPU.
    decoder = SSEDecoder()
    started = time.process_time()
    assert feed_all(decoder, b"\n" * (2 << 20)) == 0
    feed_all(decoder, b"\r\n" * (1 << 20))
    assert time.process_time() - started < 1.5


def test_many_short_events_cost_linear_time() -> None:
    decoder = SSEDecoder()
    chunk = event(custom_token_text(audio_script(1)[0]))
    started = time.process_time()
    assert feed_all(decoder, chunk * 40_000) == 40_000  # ~4 MB
    assert time.process_time() - started < 3


@pytest.mark.parametrize(
    "flood",
    [b"data: x\n", b"data:\n", b"x" * 1000, b": comment\ndata: y\n"],
    ids=["data lines, no blank line", "empty data lines", "one endless line", "comments and data"],
)
def test_an_event_that_never_ends_is_refused_with_bounded_memory(flood: bytes) -> None:
    decoder = SSEDecoder(max_event_bytes=256 * 1024)
    data = flood * (8 * (1 << 20) // len(flood))  # 8 MB that never ends an event
    tracemalloc.start()
    try:
        with pytest.raises(EngineRequestError) as caught:
            feed_all(decoder, data, piece=4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 502 and "oversized event" in caught.value.message
    assert peak < 2 << 20  # the old reader kept every line: 8 MB here and more


def test_events_split_anywhere_decode_the_same() -> None:
    stream = b": hi\r\n\r\ndata: a\r\ndata: b\r\n\r\n\n\n\ndata: c\nid: 3\n\nerror: boom\n\n"
    whole = SSEDecoder().feed(stream)
    assert whole == ["a\nb", "c", '{"error": "boom"}']
    for cut in range(1, len(stream)):
        decoder = SSEDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == whole, cut


def flood_then_speech(newlines: int) -> Reply:
    async def reply(conn: Conn) -> None:
        await conn.send_stream_head()
        for _ in range(newlines // 65536):
            await conn.send_piece(b"\n" * 65536)
        for piece in id_events():
            await conn.send_piece(piece)
        await conn.end_body()

    return reply


async def test_a_newline_flood_leaves_the_event_loop_responsive_and_the_audio_right(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    engine = await fake_engine(nursery, flood_then_speech(8 << 20), owned_by="vllm")
    server = await start_server(engine=remote_engine(engine.url))
    gaps: list[float] = []
    done = trio.Event()

    async def ticker() -> None:
        last = trio.current_time()
        while not done.is_set():
            await trio.sleep(0.005)
            now = trio.current_time()
            gaps.append(now - last)
            last = now

    nursery.start_soon(ticker)
    response = await post(server.base_url)
    done.set()
    assert b"".join(audio_of(parse_frames(response.content))) == reference_pcm(FRAMES)
    # Old reader: each 64 KB of newlines blocked the loop for about a second.
    assert max(gaps) < 0.25, max(gaps)


async def test_garbage_json_and_unknown_finish_before_audio_are_502(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    for bad in (b"data: {oops\n\n", event("", "abort"), b"data: [1, 2]\n\n"):
        engine = await fake_engine(nursery, body([bad, *speech_events()]))
        server = await start_server(engine=remote_engine(engine.url))
        response = await post(server.base_url)
        assert response.status_code == 502 and response.json()["error"]["code"] == "engine_error"
        assert "oops" not in response.text and "abort" not in response.text


async def test_done_alone_is_a_502_not_an_empty_success(nursery: trio.Nursery, start_server: StartServer) -> None:
    engine = await fake_engine(nursery, body([event("", "stop"), DONE]), owned_by="vllm")
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert response.status_code == 502 and "no audio" in response.json()["error"]["message"]


async def test_an_error_event_before_audio_keeps_its_status_class_not_its_text(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    # vLLM streams a prompt it refuses (a token id out of its vocabulary) as a 200 whose
    # first event is {"error": {..., "code": 400}}.
    refused = b'data: {"error": {"message": "Token id 200000 is out of vocabulary", "code": 400}}\n\n'
    engine = await fake_engine(nursery, body([refused, DONE]), owned_by="vllm")
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    assert "vocabulary" not in response.text
