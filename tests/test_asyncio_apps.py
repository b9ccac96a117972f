"""asyncio apps as the user guide writes them, against the embedded reference server.

The server (a Trio app) runs on a thread of its own; the client runs natively
on asyncio: ``asyncio.run``, ``asyncio.gather`` over several streams, the
FastAPI example under uvicorn (``speech_response``; its error statuses are in
test_asgi_speech_response.py), and the asyncio examples run as users run them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import uvicorn  # the test extra brings it, and fastapi
from _support_cli import clean_env

from orpheus_trio import DeadlineExceeded, OrpheusTTS
from orpheus_trio.audio import read_wav, wav_header
from orpheus_trio.server.engines.synthetic import expected_stream

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
StartThreaded = Callable[..., str]


def expected(text: str, **params: object) -> bytes:
    return b"".join(expected_stream(text, None, params))


def example_module(name: str) -> ModuleType:
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLES))


def test_quickstart_with_asyncio_run(threaded_server: StartThreaded) -> None:
    url = threaded_server()

    async def main() -> tuple[bytes, list[bytes]]:
        async with OrpheusTTS(url) as tts:
            streamed = b"".join([pcm async for pcm in tts.stream("Hello from asyncio.")])
            texts = [f"Reply number {i}." for i in range(6)]
            replies = await asyncio.gather(*(tts.synthesize(t) for t in texts))
            return streamed, replies

    streamed, replies = asyncio.run(main())
    assert streamed == expected("Hello from asyncio.")
    assert replies == [expected(f"Reply number {i}.") for i in range(6)]


def test_asyncio_wait_for_and_timeout_error(threaded_server: StartThreaded) -> None:
    """``asyncio.timeout`` cancels a stream cleanly; the client's own deadline is a TimeoutError."""
    url = threaded_server()

    async def main() -> None:
        async with OrpheusTTS(url) as tts:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await tts.synthesize("A slow reply.", ttfb_ms=2000)
            try:
                await tts.synthesize("A slow reply.", ttfb_ms=2000, timeout_s=0.05)
            except asyncio.TimeoutError as error:  # as the guide writes it
                assert isinstance(error, DeadlineExceeded)
            else:
                raise AssertionError("the deadline did not fire")
            # The client is still good after both.
            assert await tts.synthesize("Still here.") == expected("Still here.")

    asyncio.run(main())


def test_client_survives_a_second_asyncio_run(threaded_server: StartThreaded) -> None:
    url = threaded_server()
    tts = OrpheusTTS(url)
    first = asyncio.run(tts.synthesize("Once."))
    second = asyncio.run(tts.synthesize("Twice."))  # a new loop: a fresh pool there
    asyncio.run(tts.close())
    assert (first, second) == (expected("Once."), expected("Twice."))


def test_fastapi_streaming_response_under_uvicorn(threaded_server: StartThreaded) -> None:
    url = threaded_server()
    app = example_module("fastapi_app").create_app([url])

    async def main() -> tuple[httpx.Response, bytes, int]:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                page = await http.get("/")
                assert "<audio" in page.text
                pieces = 0
                async with http.stream("GET", "/speak", params={"text": "Hi, browser."}) as r:
                    body = bytearray()
                    async for piece in r.aiter_raw():
                        body += piece
                        pieces += 1
                bad = await http.get("/speak", params={"text": ""})
                assert bad.status_code == 422
            return r, bytes(body), pieces
        finally:
            server.should_exit = True
            await task

    response, body, pieces = asyncio.run(main())
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers.get("transfer-encoding") == "chunked"  # streamed, not buffered
    assert body == wav_header() + expected("Hi, browser.")
    assert pieces > 1


def run_example(name: str, *args: str, cwd: Path, url: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        env=clean_env(ORPHEUS_URLS=url),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done


def test_asyncio_quickstart_example(threaded_server: StartThreaded, tmp_path: Path) -> None:
    url = threaded_server()
    done = run_example("asyncio_quickstart.py", "Said on asyncio.", "q.wav", cwd=tmp_path, url=url)
    assert read_wav(tmp_path / "q.wav").pcm == expected("Said on asyncio.")
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("wrote q.wav:")
    assert len(lines) == 4 and all(" s" in line for line in lines[1:])


def test_realtime_playback_example_writes_pcm_when_not_on_a_terminal(
    threaded_server: StartThreaded, tmp_path: Path
) -> None:
    url = threaded_server()
    done = run_example("realtime_playback.py", "Played live.", cwd=tmp_path, url=url)
    assert done.stdout == expected("Played live.")
    assert "first audio after" in done.stderr.decode()


def test_realtime_playback_example_on_a_terminal_without_a_player_writes_a_wav(
    threaded_server: StartThreaded, tmp_path: Path
) -> None:
    """Raw PCM on a terminal is noise: it says so and writes a WAV file instead."""
    import os
    import pty

    url = threaded_server()
    master, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "realtime_playback.py"), "Played to a file."],
            cwd=tmp_path,
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=clean_env(ORPHEUS_URLS=url, PATH=str(tmp_path)),  # no aplay, no ffplay
            timeout=120,
            check=False,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not data:
                break
            shown += data
    finally:
        os.close(master)
    assert done.returncode == 0, done.stderr.decode()
    assert shown == b""  # nothing written to the terminal
    err = done.stderr.decode()
    assert "neither aplay nor ffplay is installed" in err
    assert read_wav(tmp_path / "realtime_playback.wav").pcm == expected("Played to a file.")
