"""``POST /v1/audio/speech`` through the real ``openai`` SDK, on a worker and on a gateway.

Every format is decoded (PyAV) and its duration checked against what the
synthetic engine produced; WAV and PCM must be the engine's exact bytes.
"""

from __future__ import annotations

import io
import sys
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import av
import httpx
import numpy as np
import openai
import pybase64
import pytest
import trio
from _support_gateway import start_gateway, start_worker
from _support_server import StartServer

from orpheus_trio.audio.formats import FORMATS
from orpheus_trio.server.engine import Piece
from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream

TEXT = "Hello from the speech endpoint, streamed as it is made."
VOICE = "tara"
SECONDS = sum(len(c) for c in expected_stream(TEXT, VOICE, {})) / 2 / 24000
#: Encoder delay and padding lengthen lossy formats by a frame or two.
LOSSY_SLACK_S = 0.12


def decoded_seconds(data: bytes, format: str) -> float:
    """The duration of ``data`` once decoded (``pcm`` is raw s16le 24 kHz mono)."""
    if format == "pcm":
        assert len(data) % 2 == 0
        return len(data) / 2 / 24000
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    assert frames, f"{format}: nothing decoded"
    return sum(f.samples / f.sample_rate for f in frames)


def wav_pcm(data: bytes) -> bytes:
    """The samples of a streamed WAV (unknown-length header), decoded by PyAV."""
    with av.open(io.BytesIO(data)) as container:
        return b"".join(
            f.to_ndarray().astype("<i2").tobytes() for f in container.decode(audio=0)
        )


@asynccontextmanager
async def target(
    kind: str, nursery: trio.Nursery, engine: SyntheticEngine | None = None, **settings: Any
) -> AsyncIterator[str]:
    """The base URL of a worker, or of a gateway in front of one."""
    worker = await start_worker(
        nursery, engine, **(settings if kind == "worker" else {})
    )
    if kind == "worker":
        yield worker.base_url
        return
    gateway = await start_gateway(nursery, [worker.base_url], **settings)
    yield gateway.base_url


def sdk(base_url: str, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0)


@pytest.mark.parametrize("kind", ["worker", "gateway"])
@pytest.mark.parametrize("format", FORMATS)
async def test_every_format_decodes_to_the_synthesized_duration(
    kind: str, format: str, nursery: trio.Nursery
) -> None:
    async with target(kind, nursery) as base_url:
        client = sdk(base_url)
        async with client.audio.speech.with_streaming_response.create(
            model="orpheus", voice=VOICE, input=TEXT, response_format=format  # type: ignore[arg-type]
        ) as response:
            assert response.status_code == 200
            content_type = response.headers["content-type"]
            data = b"".join([piece async for piece in response.iter_bytes()])
    expected_type = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                     "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}  # fmt: skip
    assert content_type.startswith(expected_type[format])
    seconds = decoded_seconds(data, format)
    if format in ("wav", "pcm", "flac"):
        assert seconds == pytest.approx(SECONDS, abs=1e-6)
    else:
        assert SECONDS - 0.01 <= seconds <= SECONDS + LOSSY_SLACK_S
    pcm = b"".join(expected_stream(TEXT, VOICE, {}))
    if format == "pcm":
        assert data == pcm
    elif format in ("wav", "flac"):  # lossless: the very samples
        assert wav_pcm(data) == pcm


def test_streamed_wav_header_says_unknown_length() -> None:
    from orpheus_trio.audio.formats import wav_stream_header

    header = wav_stream_header()
    assert len(header) == 44 and header[:4] == b"RIFF" and header[36:40] == b"data"
    assert header[4:8] == header[40:44] == b"\xff\xff\xff\xff"


class GatedEngine(SyntheticEngine):
    """Yields the first chunk, then waits for ``gate`` before the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        return self._gated(super().synthesize(text, voice, params))

    async def _gated(self, pieces: AsyncGenerator[Piece, None]) -> AsyncGenerator[Piece, None]:
        sent = 0
        async for piece in pieces:
            if isinstance(piece, bytes) and sent == 1:
                await self.gate.wait()
            sent += isinstance(piece, bytes)
            yield piece


@pytest.mark.parametrize("kind", ["worker", "gateway"])
@pytest.mark.parametrize("format", FORMATS)
async def test_first_bytes_leave_after_the_first_chunk(
    kind: str, format: str, nursery: trio.Nursery
) -> None:
    """Bytes arrive while the engine still holds back everything but its first chunk."""
    engine = GatedEngine()
    async with target(kind, nursery, engine) as base_url:
        async with httpx.AsyncClient(timeout=10) as http:
            body = {"input": TEXT, "voice": VOICE, "response_format": format}
            async with http.stream("POST", base_url + "/v1/audio/speech", json=body) as answer:
                assert answer.status_code == 200
                pieces = answer.aiter_bytes()
                with trio.fail_after(5):
                    first = await pieces.__anext__()
                assert first and not engine.gate.is_set()
                engine.gate.set()
                rest = b"".join([piece async for piece in pieces])
    assert decoded_seconds(first + rest, format) >= SECONDS - 0.01


@pytest.mark.parametrize("kind", ["worker", "gateway"])
async def test_sse_sends_base64_deltas_then_done(kind: str, nursery: trio.Nursery) -> None:
    async with target(kind, nursery) as base_url:
        client = sdk(base_url)
        async with client.audio.speech.with_streaming_response.create(
            model="orpheus", voice=VOICE, input=TEXT, response_format="wav",
            stream_format="sse",
        ) as response:  # fmt: skip
            assert response.headers["content-type"].startswith("text/event-stream")
            text = (await response.read()).decode()
    events = [json.loads(block.removeprefix("data: ")) for block in text.split("\n\n") if block]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and len(events) > 2
    audio = b"".join(pybase64.b64decode(e["audio"]) for e in events[:-1])
    assert wav_pcm(audio) == b"".join(expected_stream(TEXT, VOICE, {}))


@pytest.mark.parametrize("format", ["wav", "mp3"])
async def test_speed_is_honoured(format: str, start_server: StartServer) -> None:
    server = await start_server()
    client = sdk(server.base_url)
    lengths = {}
    for speed in (1.0, 2.0, 0.5):
        response = await client.audio.speech.create(
            model="orpheus", voice=VOICE, input=TEXT, response_format=format, speed=speed  # type: ignore[arg-type]
        )
        lengths[speed] = decoded_seconds(response.content, format)
    assert lengths[2.0] == pytest.approx(lengths[1.0] / 2, rel=0.05)
    assert lengths[0.5] == pytest.approx(lengths[1.0] * 2, rel=0.05)


async def error_of(base_url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(base_url + "/v1/audio/speech", json=body, headers=headers)


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"voice": "bob"}, "voice", "valid: tara, leah"),
        ({"response_format": "ogg"}, "response_format", "valid: mp3, opus, aac, flac, wav, pcm"),
        ({"speed": 5}, "speed", "from 0.25 to 4"),
        ({"speed": "fast"}, "speed", "from 0.25 to 4"),
        ({"stream_format": "ws"}, "stream_format", "valid: audio, sse"),
        ({"instructions": "whisper"}, "instructions", "emotion tags"),
        ({"input": 7}, "text", "text must be a string"),
        ({"input": "   "}, None, "text is empty"),
    ],
)
async def test_bad_requests_are_openai_shaped_400s(
    body: dict[str, Any], param: str | None, says: str, start_server: StartServer
) -> None:
    server = await start_server()
    answer = await error_of(server.base_url, {"model": "m", "input": "hi", **body})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"]


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("speed", "1" + "0" * 400),
        ("speed", "1e400"),
        ("speed", "-1e400"),
        ("speed", "1e308"),
        ("speed", "true"),
        ("speed", "[]"),
        ("voice", "7"),
        ("voice", "{}"),
        ("response_format", "[\"mp3\"]"),
        ("stream_format", "1e400"),
        ("input", "1" + "0" * 400),
    ],
)
async def test_hostile_values_are_400s_never_500s(
    field: str, raw: str, start_server: StartServer
) -> None:
    server = await start_server()
    body = {"model": "m", "input": "hi", "voice": VOICE, field: None}
    # Hand-written JSON: numbers no float holds, which json.dumps cannot write.
    content = json.dumps(body).replace(f'"{field}": null', f'"{field}": {raw}')
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            server.base_url + "/v1/audio/speech",
            content=content,
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "Traceback" not in error["message"] and "sys.set_int_max_str_digits" not in error["message"]


async def test_sdk_raises_its_own_errors(start_server: StartServer) -> None:
    server = await start_server(api_keys=("secret",), max_text_chars=20)
    with pytest.raises(openai.AuthenticationError) as denied:
        await sdk(server.base_url, "wrong").audio.speech.create(
            model="m", voice=VOICE, input="hi"
        )
    assert denied.value.status_code == 401
    assert denied.value.body["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk(server.base_url, "secret").audio.speech.create(
            model="m", voice="bob", input="hi"
        )
    assert "unknown voice 'bob'" in bad.value.message
    with pytest.raises(openai.APIStatusError) as long:
        await sdk(server.base_url, "secret").audio.speech.create(
            model="m", voice=VOICE, input="x" * 21
        )
    assert long.value.status_code == 413


async def test_admission_limits_apply(start_server: StartServer) -> None:
    engine = GatedEngine()
    server = await start_server(engine, max_concurrency=1, max_queue=0)
    async with httpx.AsyncClient(timeout=10) as http:
        body = {"input": TEXT, "voice": VOICE, "response_format": "pcm"}
        async with http.stream("POST", server.base_url + "/v1/audio/speech", json=body) as busy:
            pieces = busy.aiter_bytes()
            await pieces.__anext__()
            refused = await error_of(server.base_url, body)
            engine.gate.set()
            async for _ in pieces:
                pass
    assert refused.status_code == 429 and "retry-after" in refused.headers
    assert refused.json()["error"]["type"] == "rate_limit_error"


async def test_metrics_count_speech_requests(start_server: StartServer) -> None:
    server = await start_server()
    await sdk(server.base_url).audio.speech.create(
        model="m", voice=VOICE, input=TEXT, response_format="pcm"
    )
    await error_of(server.base_url, {"input": "hi", "voice": "bob"})
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(server.base_url + "/metrics")).text
    assert 'status="200"' in metrics and 'status="400"' in metrics
    produced = [line for line in metrics.splitlines() if line.startswith("orpheus_audio_seconds")]
    assert produced and float(produced[0].split()[-1]) == pytest.approx(SECONDS, abs=1e-3)


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
async def test_failure_after_the_start_is_never_a_complete_answer(
    stream_format: str, start_server: StartServer
) -> None:
    server = await start_server()
    body = {"input": TEXT, "voice": VOICE, "response_format": "mp3",
            "stream_format": stream_format, "error_after": 2}  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as http:
        if stream_format == "audio":
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post(server.base_url + "/v1/audio/speech", json=body)
            return
        answer = await http.post(server.base_url + "/v1/audio/speech", json=body)
    events = [json.loads(b.removeprefix("data: ")) for b in answer.text.split("\n\n") if b]
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "engine_error"
    assert all(e["type"] == "speech.audio.delta" for e in events[:-1])


async def test_playground_is_served_and_can_be_turned_off(start_server: StartServer) -> None:
    on = await start_server()
    off = await start_server(playground=False)
    async with httpx.AsyncClient() as http:
        page = await http.get(on.base_url + "/")
        missing = await http.get(off.base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/audio/speech" in page.text and "<script" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    assert missing.status_code == 404


def test_encoder_output_is_the_same_fed_whole_or_in_pieces() -> None:
    """Chunked feeding loses nothing: FLAC decodes to the exact samples either way."""
    from orpheus_trio.audio.formats import open_encoder

    pcm = (np.random.default_rng(3).standard_normal(24000) * 4000).astype("<i2").tobytes()
    encoder = open_encoder("flac")
    pieces = [encoder.encode(pcm[i : i + 1000]) for i in range(0, len(pcm), 1000)]
    data = b"".join(pieces) + encoder.finish()
    assert wav_pcm(data) == pcm


@pytest.mark.parametrize("library", ["lameenc", "av"])
def test_mp3_by_either_library_decodes(library: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """lameenc is the first choice for MP3; without it PyAV encodes the same stream."""
    from orpheus_trio.audio import formats

    if library == "av":
        monkeypatch.setitem(sys.modules, "lameenc", None)  # import fails
    encoder = formats.open_encoder("mp3")
    assert type(encoder).__name__ == ("_LameEncoder" if library == "lameenc" else "_AvEncoder")
    pcm = b"".join(expected_stream(TEXT, VOICE, {}))
    data = b"".join(encoder.encode(pcm[i : i + 4800]) for i in range(0, len(pcm), 4800))
    data += encoder.finish()
    assert SECONDS - 0.01 <= decoded_seconds(data, "mp3") <= SECONDS + LOSSY_SLACK_S


@pytest.mark.parametrize(
    ("body", "param"),
    [({"response_format": "opus"}, "response_format"), ({"response_format": "wav", "speed": 1.5}, "speed")],
)
async def test_without_pyav_the_400_says_what_to_install(
    body: dict[str, Any], param: str, start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server()
    monkeypatch.setitem(sys.modules, "av", None)
    answer = await error_of(server.base_url, {"input": "hi", **body})
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["param"] == param
    assert "pip install 'orpheus-trio[formats]'" in error["message"]
    still = await error_of(server.base_url, {"input": "hi", "response_format": "wav"})
    assert still.status_code == 200


@pytest.mark.parametrize("command", ["serve", "gateway"])
def test_no_playground_flag_on_serve_and_gateway(command: str) -> None:
    import argparse

    from orpheus_trio.cli import gateway as gateway_command
    from orpheus_trio.cli import serve as serve_command

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    serve_command.register(subparsers)
    gateway_command.register(subparsers)
    extra = ["--upstream", "http://127.0.0.1:1"] if command == "gateway" else []
    on = serve_command.config_from_args(parser.parse_args([command, *extra]))
    off = serve_command.config_from_args(parser.parse_args([command, *extra, "--no-playground"]))
    assert on.playground and not off.playground


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("speed", [1.0, 1.5])
def test_an_encoder_that_got_no_audio_finishes_cleanly(format: str, speed: float) -> None:
    from orpheus_trio.audio.formats import open_encoder

    encoder = open_encoder(format, speed=speed)
    data = encoder.encode(b"") + encoder.finish()
    assert encoder.finish() == b""  # finishing twice is harmless
    if format == "wav":
        assert len(data) == 44  # a valid, empty WAV
    elif format in ("pcm", "mp3"):
        assert data == b""


async def test_the_deadline_applies(start_server: StartServer) -> None:
    server = await start_server()
    body = {"input": TEXT, "voice": VOICE, "response_format": "opus", "stream_format": "sse",
            "timeout_s": 0.3, "stall_s": 30, "stall_after": 1}  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(5):
            answer = await http.post(server.base_url + "/v1/audio/speech", json=body)
    events = [json.loads(b.removeprefix("data: ")) for b in answer.text.split("\n\n") if b]
    assert events[0]["type"] == "speech.audio.delta"  # the first chunk came before the stall
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "deadline_exceeded"


async def test_encoding_never_blocks_the_event_loop(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While an encoder is stuck in its thread, the server still answers others."""
    import threading

    from orpheus_trio.server import openai_speech

    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    real_open = openai_speech.open_encoder

    class Stuck:
        def __init__(self, format: str, *, speed: float = 1.0) -> None:
            self._inner = real_open(format, speed=speed)

        def encode(self, pcm: bytes) -> bytes:
            entered.set()
            release.wait(timeout=10)  # on the loop, this would freeze everything
            returned.set()
            return self._inner.encode(pcm)

        def finish(self) -> bytes:
            return self._inner.finish()

    monkeypatch.setattr(openai_speech, "open_encoder", Stuck)
    server = await start_server()
    async with httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        nursery.start_soon(
            error_of, server.base_url, {"input": "hi", "voice": VOICE, "response_format": "mp3"}
        )
        await trio.to_thread.run_sync(entered.wait, 10)
        system = await http.get(server.base_url + "/v1/system")
        answered_while_stuck = not returned.is_set()
        release.set()
    assert system.status_code == 200 and answered_while_stuck


def codec_threads() -> int:
    """Threads that Python did not start (codec threads): the OS's count less Python's,
    so Trio's worker threads, kept a while for reuse, are not counted."""
    import os
    import threading

    return len(os.listdir("/proc/self/task")) - len(threading.enumerate())


async def test_encoder_threads_end_with_a_stream_the_caller_left(start_server: StartServer) -> None:
    """PyAV's opus, aac and flac encoders run codec threads: a caller leaving mid-stream
    must end them at once, not when the garbage collector gets round to the encoder."""
    import gc

    server = await start_server()
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    body = {"voice": VOICE, "chunks": 40, "chunk_samples": 2400, "rtf": 1.0}
    before = codec_threads()
    gc.disable()
    try:
        for format in ("mp3", "opus", "aac", "flac") * 6:
            request = json.dumps({"input": TEXT, "response_format": format, **body}).encode()
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                await stream.send_all(
                    b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(request), request)
                )
                head = await stream.receive_some(65536)
                assert head.startswith(b"HTTP/1.1 200 ")
            # Closed after the head and the first audio: the caller left.
        with trio.fail_after(5):
            while server.app.admission.running:
                await trio.sleep(0.01)
        assert codec_threads() == before
    finally:
        gc.enable()
