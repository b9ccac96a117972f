"""The ``orpheus-remote`` engine against a scripted fake inference engine: request mapping and faults.

The real engines (llama.cpp's server, vLLM) are in ``test_engine_llama_server.py``
and ``test_engine_vllm.py``; here a raw socket server plays an OpenAI-compatible
completions stream that breaks in the ways real engines do, to pin the v1 errors
each fault becomes. Hostile engines are in ``test_engine_hostile.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from _support_cli import orpheus_trio
from _support_faults import Conn, RawServer, Reply, body, closed_port_url, reset_after, status
from _support_llm import (
    audio_script,
    custom_token_text,
    frame_codes,
    save_orpheus_tokenizer,
    save_tokenizer,
    snac_dir,
)
from _support_server import StartServer, audio_of, parse_frames
from _support_snac import shared_decoder

from orpheus_trio.local.batching import BackgroundBatchingDecoder
from orpheus_trio.local.engine_client import (
    EngineRequestError,
    EngineSamplingParams,
    RemoteLM,
    SSEDecoder,
    text_prompt,
)
from orpheus_trio.local.llm import END_OF_SPEECH
from orpheus_trio.local.runaway import derived_max_tokens
from orpheus_trio.local.stream_decode import StreamingDecoder
from orpheus_trio.local.synthesizer import LocalSynthesizer
from orpheus_trio.local.tokens import FRAME_SAMPLES
from orpheus_trio.server.engines.orpheus import OrpheusEngine
from orpheus_trio.server.engines.orpheus_remote import NAME, from_args

FRAMES = 6



def event(text: str = "", finish: str | None = None, **choice: Any) -> bytes:
    payload = {"choices": [{"text": text, "index": 0, "finish_reason": finish, **choice}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def speech_events(frames: int = FRAMES, finish: str | None = "stop") -> list[bytes]:
    """One event per token, as engines stream them, then the finish and [DONE]."""
    events = [event(custom_token_text(t)) for t in audio_script(frames)]
    return [*events, event("", finish), DONE] if finish else events


def reference_pcm(frames: int) -> bytes:
    """What the on-box path makes of the same frames: the same streaming windows, byte for byte."""
    decoder = StreamingDecoder(shared_decoder())
    for f in range(frames):
        decoder.push(np.array([frame_codes(f)], dtype=np.int64))
    decoder.flush()
    return decoder.pop_pcm()


def remote_engine(url: str, **lm_options: Any) -> OrpheusEngine:
    lm = RemoteLM(url, **lm_options)
    synthesizer = LocalSynthesizer(lm, BackgroundBatchingDecoder(shared_decoder()))
    return OrpheusEngine(synthesizer, name=NAME)


def models_answer(owned_by: str, **model: Any) -> Reply:
    """``GET /v1/models`` as engines answer it (kept alive: the probe's connection is reused)."""

    async def reply(conn: Conn) -> None:
        data = [{"id": "orpheus", "owned_by": owned_by, **model}]
        payload = json.dumps({"object": "list", "data": data}).encode()
        await conn.send_head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        await conn.stream.send_all(payload)

    return reply


async def fake_engine(
    nursery: trio.Nursery, reply: Reply, *, owned_by: str = "fake", keep_alive: bool = False
) -> RawServer:
    """A scripted engine: ``reply`` to every completions request, ``/v1/models`` answered
    as an engine owned by ``owned_by`` (``vllm``, ``llamacpp``, ...) would."""
    server = RawServer(lambda _: reply, keep_alive=keep_alive)
    server.replies = lambda i: models_answer(owned_by) if server.heads[i].startswith(b"GET ") else reply
    await server.start(nursery)
    return server


def completions(engine: RawServer) -> list[tuple[bytes, bytes]]:
    """The (head, body) of every completions request the engine got (not its /v1/models)."""
    return [(h, b) for h, b in zip(engine.heads, engine.bodies, strict=True) if h.startswith(b"POST ")]


async def post(base_url: str, **request: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return await client.post("/v1/tts/stream", json={"text": "hello", **request})


def in_band_error(response: httpx.Response) -> dict[str, Any]:
    frames = parse_frames(response.content)
    assert response.status_code == 200
    assert frames[-1]["type"] == "error" and not any(f["type"] == "eos" for f in frames)
    return frames[-1]


async def test_speech_from_engine_text_pieces_equals_the_on_box_decode(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    engine = await fake_engine(nursery, body(speech_events()))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url, voice="tara")
    frames = parse_frames(response.content)
    assert b"".join(audio_of(frames)) == reference_pcm(FRAMES)
    assert frames[-1] == {"type": "eos", "chunks": len(audio_of(frames)), "samples": FRAMES * FRAME_SAMPLES}
    (metrics,) = [f for f in frames if "finish_reason" in f]
    assert metrics["finish_reason"] == "stop" and metrics["frames"] == FRAMES


async def test_tokens_split_across_pieces_decode_the_same(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    text = "".join(custom_token_text(t) for t in audio_script(FRAMES))
    # Pieces cut at arbitrary points, inside tokens too.
    pieces = [text[i : i + 13] for i in range(0, len(text), 13)]
    engine = await fake_engine(nursery, body([*(event(p) for p in pieces), event("", "stop"), DONE]))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert b"".join(audio_of(parse_frames(response.content))) == reference_pcm(FRAMES)


def id_events(frames: int = FRAMES, per_event: int = 3, finish: str = "stop") -> list[bytes]:
    """vLLM's stream with ``return_token_ids``: the ids of each step, the text beside them
    empty (a tokenizer that skips special tokens), the stop token's id in the last event."""
    tokens = audio_script(frames)
    events = [event("", token_ids=tokens[i : i + per_event]) for i in range(0, len(tokens), per_event)]
    return [*events, event("", finish, token_ids=[END_OF_SPEECH] if finish == "stop" else []), DONE]


async def test_token_ids_are_asked_for_and_decode_the_same_as_text(
    nursery: trio.Nursery, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await fake_engine(nursery, body(id_events()), owned_by="vllm")
    lm = RemoteLM(engine.url)
    server = await start_server(engine=OrpheusEngine(LocalSynthesizer(lm, shared_decoder()), name=NAME))
    with caplog.at_level(logging.INFO, "orpheus_trio.engine"):
        for _ in range(2):
            response = await post(server.base_url)
            assert b"".join(audio_of(parse_frames(response.content))) == reference_pcm(FRAMES)
    sent = json.loads(completions(engine)[0][1])
    assert sent["return_token_ids"] is True and sent["skip_special_tokens"] is False
    # Asked once which engine this is, and the form learned once, both logged.
    assert [h.split(b" ")[:2] for h in engine.heads].count([b"GET", b"/v1/models"]) == 1
    assert (lm.engine, lm.token_form) == ("vllm", "ids")
    logged = [r.getMessage() for r in caplog.records if r.name == "orpheus_trio.engine"]
    assert sum("tokens arrive as ids" in m for m in logged) == 1 and sum(m.endswith(": vllm") for m in logged) == 1


async def test_an_engine_that_sent_ids_and_then_stops_is_an_error_not_a_guess(nursery: trio.Nursery) -> None:
    replies = [body(id_events()), body(speech_events())]
    engine = RawServer(lambda _: replies[0])
    engine.replies = lambda i: models_answer("vllm") if engine.heads[i].startswith(b"GET ") else replies.pop(0)
    await engine.start(nursery)
    async with LocalSynthesizer(RemoteLM(engine.url), shared_decoder()) as synth:
        assert await synth.synthesize("hello") == reference_pcm(FRAMES)
        with pytest.raises(EngineRequestError) as caught:
            await synth.synthesize("hello")
    assert caught.value.status == 502 and "changed how it sends tokens" in caught.value.message


async def test_llama_cpp_is_asked_for_ids_on_its_own_completion_endpoint(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    tokens = audio_script(FRAMES)

    def native(ids: list[int], stop: bool = False, **more: Any) -> bytes:
        return b"data: " + json.dumps({"content": "", "tokens": ids, "stop": stop, **more}).encode() + b"\n\n"

    events = [native([t]) for t in tokens] + [native([], True, stop_type="eos")]
    engine = await fake_engine(nursery, body(events), owned_by="llamacpp")
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url, max_tokens=500)
    assert b"".join(audio_of(parse_frames(response.content))) == reference_pcm(FRAMES)
    ((head, sent),) = completions(engine)
    assert head.startswith(b"POST /completion ")
    assert json.loads(sent)["return_tokens"] is True and json.loads(sent)["max_tokens"] == 500


async def test_sampling_params_map_onto_the_engine_request(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    engine = await fake_engine(nursery, body(speech_events(1)))
    server = await start_server(
        engine=remote_engine(engine.url + "/v1", model="orpheus-3b", api_key="engine-key")
    )
    params = {"temperature": 0.3, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.2}
    response = await post(server.base_url, voice="leah", max_tokens=120, seed=7, stop=["<x>"], **params)
    assert response.status_code == 200, response.text
    ((head, _),) = completions(engine)
    assert head.startswith(b"POST /v1/completions ")
    assert b"Authorization: Bearer engine-key" in head
    sent = json.loads(completions(engine)[0][1])
    assert sent["prompt"] == text_prompt("hello", "leah")
    assert sent["prompt"].startswith("<custom_token_3><|begin_of_text|>leah: hello<|eot_id|>")
    assert sent["stream"] is True and sent["model"] == "orpheus-3b"
    assert {k: sent[k] for k in params} == params
    assert sent["repeat_penalty"] == 1.2  # llama.cpp's name for it
    assert sent["max_tokens"] == 120 and sent["seed"] == 7
    assert sent["stop"] == ["<custom_token_2>", "<x>"]
    assert sent["stop_token_ids"] == [128258]
    assert sent["samplers"] == ["penalties", "temperature", "top_k", "top_p"]  # llama.cpp's chain, on-box order


async def test_top_k_off_and_no_seed_are_left_out(nursery: trio.Nursery, start_server: StartServer) -> None:
    engine = await fake_engine(nursery, body(speech_events(1)))
    server = await start_server(engine=remote_engine(engine.url))
    await post(server.base_url)
    sent = json.loads(completions(engine)[0][1])
    assert "top_k" not in sent and "seed" not in sent and "model" not in sent
    assert sent["samplers"] == ["penalties", "temperature", "top_p"]  # no top_k in llama.cpp's chain either
    defaults = EngineSamplingParams()
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (
        defaults.temperature,
        defaults.top_p,
        # No max_tokens asked for: the runaway guard derives it from the text.
        derived_max_tokens("hello", ceiling=defaults.max_tokens),
    )


@pytest.mark.parametrize(
    ("request_params", "key"),
    [({"volume": 3}, "volume"), ({"stop": 5}, "stop"), ({"stop": ["a"] * 5}, "stop"), ({"top_p": 0}, "top_p")],
)
async def test_bad_params_are_400_before_the_engine_is_asked(
    nursery: trio.Nursery, start_server: StartServer, request_params: dict[str, Any], key: str
) -> None:
    engine = await fake_engine(nursery, body(speech_events()))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url, **request_params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_param" and error["message"].startswith(f"{key}: ")
    assert engine.requests == 0


async def test_engine_down_is_503_unavailable_before_any_audio(start_server: StartServer) -> None:
    url = closed_port_url()
    server = await start_server(engine=remote_engine(url))
    response = await post(server.base_url)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "unavailable" and "unreachable" in error["message"]
    assert url.split("//")[1] not in response.text  # the engine's address is the worker's business


@pytest.mark.parametrize(
    ("engine_status", "status_code", "code"),
    [
        (503, 503, "unavailable"),
        (429, 429, "overloaded"),
        (400, 400, "invalid_request"),
        (422, 400, "invalid_request"),
        (401, 502, "engine_error"),
        (404, 502, "engine_error"),
        (500, 502, "engine_error"),
    ],
)
async def test_engine_error_statuses_become_v1_errors(
    nursery: trio.Nursery,
    start_server: StartServer,
    engine_status: int,
    status_code: int,
    code: str,
) -> None:
    engine = await fake_engine(nursery, status(engine_status, "scripted", retry_after="3"))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert response.status_code == status_code
    error = response.json()["error"]
    assert error["code"] == code
    # The worker's own words: the engine's status class, never its text or its address.
    assert f"({engine_status})" in error["message"] and "scripted" not in response.text
    assert engine.url.split("//")[1] not in response.text
    if code == "overloaded":
        assert response.headers["Retry-After"] == "3"


async def test_stream_cut_after_audio_is_an_in_band_error_not_a_complete_reply(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    engine = await fake_engine(nursery, reset_after(speech_events(FRAMES, finish=None)))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert audio_of(parse_frames(response.content))  # some audio went out first
    error = in_band_error(response)
    assert error["code"] == "engine_error" and "stream broke" in error["message"]


async def test_stream_ending_without_a_finish_reason_is_an_error(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    engine = await fake_engine(nursery, body(speech_events(2, finish=None)))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert response.status_code == 502  # no audio yet: 2 frames are within the look-ahead
    error = response.json()["error"]
    assert error["code"] == "engine_error" and "without a finish reason" in error["message"]


async def test_done_without_a_finish_reason_is_an_error(nursery: trio.Nursery, start_server: StartServer) -> None:
    engine = await fake_engine(nursery, body([*speech_events(FRAMES, finish=None), DONE]))
    server = await start_server(engine=remote_engine(engine.url))
    error = in_band_error(await post(server.base_url))
    assert error["code"] == "engine_error" and "[DONE]" in error["message"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (event("Hello there!"), "text that is not a <custom_token_N>"),
        (event("<custom_token_99999>"), "not an audio token"),
        (b'data: {"error": {"message": "out of memory"}}\n\n', "reported an error mid-stream"),
        (b"data: {not json\n\n", "not JSON"),
        (event("", "abort"), "ended the reply abnormally"),
    ],
)
async def test_garbage_mid_stream_ends_it_with_engine_error(
    nursery: trio.Nursery, start_server: StartServer, bad: bytes, message: str
) -> None:
    events = speech_events(FRAMES, finish=None)
    engine = await fake_engine(nursery, body([*events[:35], bad, *events[35:], event("", "stop"), DONE]))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    error = in_band_error(response)
    assert error["code"] == "engine_error" and message in error["message"]
    assert b"out of memory" not in response.content and b"Hello there" not in response.content
    # What went out before the fault is exactly the start of the right audio, never garbage.
    sent = b"".join(audio_of(parse_frames(response.content)))
    assert reference_pcm(FRAMES).startswith(sent)


@pytest.mark.parametrize(
    "first",
    [event("Hello there!"), event("<custom_token_99999>"), event("", token_ids=[42]), event("", token_ids=[999_999])],
    ids=["text", "text id out of range", "id of a word", "id out of range"],
)
async def test_a_first_token_that_is_not_audio_is_a_502_before_audio(
    nursery: trio.Nursery, start_server: StartServer, first: bytes
) -> None:
    rest = id_events() if b"token_ids" in first else speech_events()
    engine = await fake_engine(nursery, body([first, *rest]))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert response.status_code == 502, response.text  # clients fail over, as for garbage JSON
    error = response.json()["error"]
    assert error["code"] == "engine_error" and "bad audio token" in error["message"]
    assert "Hello" not in response.text


@pytest.mark.parametrize("events", [[event("", "stop"), DONE], [event("", "length"), DONE]], ids=["stop", "length"])
async def test_a_reply_with_no_audio_is_a_502_not_an_empty_success(
    nursery: trio.Nursery, start_server: StartServer, events: list[bytes]
) -> None:
    engine = await fake_engine(nursery, body(events))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "engine_error" and "no audio" in error["message"]


async def test_reply_cut_by_max_tokens_is_marked_truncated(nursery: trio.Nursery, start_server: StartServer) -> None:
    events = speech_events(FRAMES, finish=None)[:39]  # 5 frames and 4 tokens
    engine = await fake_engine(nursery, body([*events, event("", "length"), DONE]))
    server = await start_server(engine=remote_engine(engine.url))
    with pytest.warns(UserWarning, match="max_tokens"):
        response = await post(server.base_url, max_tokens=39)
    frames = parse_frames(response.content)
    (metrics,) = [f for f in frames if "finish_reason" in f]
    assert metrics["finish_reason"] == "length" and metrics["truncated"] is True
    assert metrics["dropped_tokens"] == 4
    assert frames[-1] == {"type": "eos", "chunks": len(audio_of(frames)), "samples": 5 * FRAME_SAMPLES}


def kept_alive(events: list[bytes], *, end_body: bool = True) -> Reply:
    """A reply on a connection the engine keeps open (as vLLM's and SGLang's servers do)."""

    async def reply(conn: Conn) -> None:
        await conn.send_stream_head(keep_alive=True)
        for piece in events:
            await conn.send_piece(piece)
        if end_body:
            await trio.sleep(0.05)  # the body's last chunk a write later, not in [DONE]'s read
            await conn.end_body()
        else:  # the body held open after [DONE]
            await conn.until_client_closes()

    return reply


async def test_utterances_one_after_another_reuse_one_engine_connection(nursery: trio.Nursery) -> None:
    engine = await fake_engine(nursery, kept_alive(speech_events()), keep_alive=True)
    async with LocalSynthesizer(RemoteLM(engine.url), shared_decoder()) as synth:
        for _ in range(3):
            assert await synth.synthesize("hello") == reference_pcm(FRAMES)
    # Each reply was read past [DONE] to the body's end, so its connection went back to the
    # pool (the /v1/models question's too).
    assert (len(completions(engine)), engine.requests, engine.connections) == (3, 4, 1)


async def test_a_body_held_open_after_done_costs_the_connection_not_the_reply(nursery: trio.Nursery) -> None:
    engine = await fake_engine(nursery, kept_alive(speech_events(), end_body=False), keep_alive=True)
    async with LocalSynthesizer(RemoteLM(engine.url), shared_decoder()) as synth:
        for _ in range(2):
            start = trio.current_time()
            assert await synth.synthesize("hello") == reference_pcm(FRAMES)
            assert trio.current_time() - start < 5  # the wait for the body's end is bounded (0.25 s)
    assert (len(completions(engine)), engine.connections) == (2, 2)


def endless(conn_log: list[Conn], closed: list[bool]) -> Reply:
    """Audio tokens forever (a frame every 10 ms) until the worker closes the connection."""

    async def reply(conn: Conn) -> None:
        conn_log.append(conn)
        await conn.send_stream_head()
        while True:
            try:
                for token in audio_script(1):
                    await conn.send_piece(event(custom_token_text(token)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The worker closed while this side was writing (a send to a closed peer fails
                # rather than waiting to read its close): that is the close being waited for.
                closed.append(True)
                return
            if await conn.until_client_closes(0.01):
                closed.append(True)
                return

    return reply


@pytest.mark.parametrize("how", ["disconnect", "deadline"])
async def test_leaving_or_deadline_closes_the_engine_stream(
    nursery: trio.Nursery, start_server: StartServer, how: str
) -> None:
    conns: list[Conn] = []
    closed: list[bool] = []
    engine = await fake_engine(nursery, endless(conns, closed))
    server = await start_server(engine=remote_engine(engine.url))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        request = {"text": "hello", "max_tokens": 100_000, "runaway": "off"}
        if how == "deadline":
            request["timeout_s"] = 1
        async with client.stream("POST", "/v1/tts/stream", json=request) as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if how == "disconnect" and '"chunk"' in line:
                    break
    if how == "deadline":
        assert json.loads(lines[-1])["code"] == "deadline_exceeded"
    with trio.fail_after(3):
        while not closed:
            await trio.sleep(0.01)
    assert await engine.wait_connections_closed() == 0


def test_sse_decoder_joins_data_lines_and_skips_comments() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": keep-alive\n\ndata: a\r\ndata: b\r\n\r\ndata: [DO") == ["a\nb"]
    assert decoder.feed(b"NE]\n") == []
    assert decoder.close() == ["[DONE]"]


def test_llm_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="llm_url must be an http"):
        RemoteLM("127.0.0.1:8000")


def _args(**values: Any) -> argparse.Namespace:
    base = {"llm_url": None, "snac": None, "model": None, "llm_model": None, "llm_api_key": None}
    return argparse.Namespace(**{**base, "tokenizer": None, "device": "cpu", "voices": "tara", **values})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "needs --llm-url and --snac"),
        ({"llm_url": "http://127.0.0.1:1"}, "needs --snac"),
        ({"llm_url": "http://127.0.0.1:1", "snac": "x", "model": "m"}, "drop --model"),
    ],
)
def test_serve_flags_name_what_is_missing(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_args(_args(**values))


def test_from_args_builds_a_remote_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORPHEUS_LLM_API_KEY", "from-env")
    engine = from_args(_args(llm_url="http://127.0.0.1:1/v1", snac=str(snac_dir()), voices="zoe,tara"))
    assert engine.name == "orpheus-remote" and engine.voices() == ["zoe", "tara"]
    lm = engine.synthesizer.lm
    assert isinstance(lm, RemoteLM) and lm.url == "http://127.0.0.1:1"
    assert lm._headers["Authorization"] == "Bearer from-env"



async def test_cli_llm_flags_that_cannot_work_are_refused_before_loading(tmp_path: Path) -> None:
    out = tmp_path / "x.wav"
    url = closed_port_url()
    for flags, message in [
        (["--llm-url", url], "--llm-url needs --snac"),
        (["--llm-url", url, "--snac", snac_dir(), "--model", "m"], "give one of them"),
        (["--llm-url", url, "--snac", snac_dir(), "--dtype", "float16"], "--dtype is the on-box model's"),
        (["--model", "m", "--snac", snac_dir(), "--llm-model", "x"], "--llm-model: only with --llm-url"),
        (["--llm-model", "x"], "--llm-model: only with --model and --snac"),
    ]:
        done = await orpheus_trio("speak", "hi", "-o", out, *flags)
        assert done.returncode == 2 and message in done.stderr.decode(), (flags, done.stderr)
    assert not out.exists()


async def test_cli_speak_with_the_engine_down_fails_with_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "x.wav"
    done = await orpheus_trio("speak", "hi", "-o", out, "--llm-url", closed_port_url(), "--snac", snac_dir())
    err = done.stderr.decode()
    assert done.returncode == 1 and "unreachable" in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("special", [True, False], ids=["audio tokens special", "audio tokens plain"])
def test_the_text_prompt_is_the_id_prompt_under_an_orpheus_shaped_tokenizer(tmp_path: Path, special: bool) -> None:
    from transformers import AutoTokenizer

    from orpheus_trio.local.llm import prompt_ids

    save_orpheus_tokenizer(tmp_path, special=special)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    # What an engine that tokenizes the text prompt itself gets is the prompt sent as ids.
    spelled = tokenizer(text_prompt("hello world", "tara"), add_special_tokens=False).input_ids
    assert spelled == list(prompt_ids(tokenizer, "hello world", "tara"))
    # An engine that skips special tokens streams no text for them: why ids are asked for.
    audio = audio_script(1)
    shown = tokenizer.decode(audio, skip_special_tokens=True)
    assert shown == ("" if special else "".join(custom_token_text(t) for t in audio))


async def test_ids_past_the_context_vllm_states_are_a_400_before_it_is_asked(
    nursery: trio.Nursery, start_server: StartServer, tmp_path: Path
) -> None:
    save_tokenizer(tmp_path)
    engine = RawServer(lambda _: body(id_events()))
    replies = engine.replies
    engine.replies = lambda i: models_answer("vllm", max_model_len=64) if engine.heads[i].startswith(b"GET ") else replies(i)
    await engine.start(nursery)
    server = await start_server(engine=remote_engine(engine.url, tokenizer=str(tmp_path)))
    assert (await post(server.base_url, max_tokens=50)).status_code == 200  # 10 prompt ids + 50 fit in 64
    response = await post(server.base_url, max_tokens=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "context of 64 tokens" in error["message"]
    assert len(completions(engine)) == 1  # the refused one never reached the engine
