"""The ``orpheus-remote`` engine against a scripted fake inference engine: request mapping and faults.

The real engine (llama.cpp's server) is in ``test_engine_llama_server.py``;
here a raw socket server plays an OpenAI-compatible completions stream that
breaks in the ways real engines do, to pin the v1 errors each fault becomes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from _support_cli import orpheus_trio
from _support_faults import Conn, RawServer, Reply, body, closed_port_url, reset_after, status
from _support_llm import audio_script, custom_token_text, frame_codes, snac_dir
from _support_server import StartServer, audio_of, parse_frames
from _support_snac import shared_decoder

from orpheus_trio.local.batching import BackgroundBatchingDecoder
from orpheus_trio.local.runaway import derived_max_tokens
from orpheus_trio.local.engine_client import EngineSamplingParams, RemoteLM, SSEDecoder, text_prompt
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


async def fake_engine(nursery: trio.Nursery, reply: Reply) -> RawServer:
    server = RawServer(lambda _: reply)
    await server.start(nursery)
    return server


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


async def test_tokens_split_across_pieces_and_token_ids_decode_the_same(
    nursery: trio.Nursery, start_server: StartServer
) -> None:
    tokens = audio_script(FRAMES)
    text = "".join(custom_token_text(t) for t in tokens[:-7])
    # Pieces cut at arbitrary points, inside tokens too; the last frame as ids.
    pieces = [text[i : i + 13] for i in range(0, len(text), 13)]
    events = [event(p) for p in pieces] + [event("", token_ids=tokens[-7:]), event("", "stop"), DONE]
    engine = await fake_engine(nursery, body(events))
    server = await start_server(engine=remote_engine(engine.url))
    response = await post(server.base_url)
    assert b"".join(audio_of(parse_frames(response.content))) == reference_pcm(FRAMES)


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
    (head,) = engine.heads
    assert head.startswith(b"POST /v1/completions ")
    assert b"Authorization: Bearer engine-key" in head
    sent = json.loads(engine.bodies[0])
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
    sent = json.loads(engine.bodies[0])
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
    server = await start_server(engine=remote_engine(closed_port_url()))
    response = await post(server.base_url)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "unavailable" and "unreachable" in error["message"]


@pytest.mark.parametrize(
    ("engine_status", "status_code", "code"),
    [
        (503, 503, "unavailable"),
        (429, 429, "overloaded"),
        (400, 400, "invalid_request"),
        (422, 400, "invalid_request"),
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
    assert f"answered {engine_status}: scripted {engine_status}" in error["message"]
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
        (b'data: {"error": {"message": "out of memory"}}\n\n', "out of memory"),
        (b"data: {not json\n\n", "not JSON"),
        (event("", "abort"), "finish_reason 'abort'"),
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
    # What went out before the fault is exactly the start of the right audio, never garbage.
    sent = b"".join(audio_of(parse_frames(response.content)))
    assert reference_pcm(FRAMES).startswith(sent)


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
    engine = RawServer(lambda _: kept_alive(speech_events()), keep_alive=True)
    await engine.start(nursery)
    async with LocalSynthesizer(RemoteLM(engine.url), shared_decoder()) as synth:
        for _ in range(3):
            assert await synth.synthesize("hello") == reference_pcm(FRAMES)
    # Each reply was read past [DONE] to the body's end, so its connection went back to the pool.
    assert (engine.requests, engine.connections) == (3, 1)


async def test_a_body_held_open_after_done_costs_the_connection_not_the_reply(nursery: trio.Nursery) -> None:
    engine = RawServer(lambda _: kept_alive(speech_events(), end_body=False), keep_alive=True)
    await engine.start(nursery)
    async with LocalSynthesizer(RemoteLM(engine.url), shared_decoder()) as synth:
        for _ in range(2):
            start = trio.current_time()
            assert await synth.synthesize("hello") == reference_pcm(FRAMES)
            assert trio.current_time() - start < 5  # the wait for the body's end is bounded (0.25 s)
    assert (engine.requests, engine.connections) == (2, 2)


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
