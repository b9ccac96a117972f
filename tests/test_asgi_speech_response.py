"""``speech_response`` under a real uvicorn: errors reach the HTTP client as statuses.

The FastAPI example (examples/fastapi_app.py) against the reference server:
a bad voice is a 400, a refused key a 401, no reachable worker a 502 then
(breaker open) a 503 with Retry-After, each with a JSON error body and no
traceback in the logs; a stream that fails after audio cuts the body, which
httpx reports as an error instead of a clean end.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from test_asyncio_apps import example_module, expected

from orpheus_trio import OrpheusTTS
from orpheus_trio.audio import wav_header
from orpheus_trio.integrations.asgi import speech_response

StartThreaded = Callable[..., str]


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` under uvicorn on a free port; an HTTP client for it."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield http
    finally:
        server.should_exit = True
        await task


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [record for record in caplog.records if record.exc_info], caplog.text


def test_the_fastapi_example_streams_wav(threaded_server: StartThreaded) -> None:
    app = example_module("fastapi_app").create_app([threaded_server()])

    async def main() -> tuple[httpx.Response, bytes]:
        async with served(app) as http:
            async with http.stream("GET", "/speak", params={"text": "Hi, browser."}) as response:
                return response, await response.aread()

    response, body = asyncio.run(main())
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["x-request-id"]
    assert body == wav_header() + expected("Hi, browser.")


def test_a_bad_voice_is_a_400_with_the_services_error(
    threaded_server: StartThreaded, caplog: pytest.LogCaptureFixture
) -> None:
    app = example_module("fastapi_app").create_app([threaded_server()])

    async def main() -> httpx.Response:
        async with served(app) as http:
            return await http.get("/speak", params={"text": "Hi.", "voice": "nobody-here"})

    response = asyncio.run(main())
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "invalid_param"
    assert "nobody-here" in error["message"]
    no_tracebacks(caplog)


def test_a_refused_key_is_a_401(threaded_server: StartThreaded, caplog: pytest.LogCaptureFixture) -> None:
    url = threaded_server(api_keys=("the-right-key",))
    app = example_module("fastapi_app").create_app([url], api_key="a-wrong-key")

    async def main() -> httpx.Response:
        async with served(app) as http:
            return await http.get("/speak", params={"text": "Hi."})

    response = asyncio.run(main())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "a-wrong-key" not in response.text
    no_tracebacks(caplog)


def test_no_reachable_worker_is_a_502_then_a_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = closed_port_url()
    app = example_module("fastapi_app").create_app([url])

    async def main() -> list[httpx.Response]:
        async with served(app) as http:
            return [await http.get("/speak", params={"text": "Hi."}) for _ in range(6)]

    responses = asyncio.run(main())
    assert responses[0].status_code == 502
    assert responses[0].json()["error"]["code"] == "upstream_failed"
    assert url not in responses[0].text  # the internal address stays in the log
    assert responses[-1].status_code == 503  # the breaker opened meanwhile
    assert responses[-1].json()["error"]["code"] == "unavailable"
    assert int(responses[-1].headers["retry-after"]) >= 1
    assert all(r.status_code in (502, 503) for r in responses)
    assert url in caplog.text  # the cause, for the operator
    no_tracebacks(caplog)


def test_a_failure_after_audio_cuts_the_body(
    threaded_server: StartThreaded, caplog: pytest.LogCaptureFixture
) -> None:
    tts = OrpheusTTS([threaded_server()])
    app = FastAPI()

    @app.get("/speak")
    async def speak(text: str, error_after: int) -> Response:
        return await speech_response(tts, text, error_after=error_after, chunk_samples=1200)

    async def main() -> tuple[int, bytes, BaseException | None]:
        received = bytearray()
        async with tts, served(app) as http:
            try:
                async with http.stream("GET", "/speak", params={"text": "A long sentence to say.", "error_after": 3}) as r:
                    async for piece in r.aiter_bytes():
                        received += piece
            except httpx.HTTPError as error:
                return r.status_code, bytes(received), error
        return r.status_code, bytes(received), None

    with caplog.at_level(logging.WARNING):
        status, received, error = asyncio.run(main())
    assert status == 200
    assert isinstance(error, httpx.RemoteProtocolError), "the cut body read as a clean end"
    whole = expected("A long sentence to say.", chunk_samples=1200)
    assert received == wav_header() + whole[: 3 * 1200 * 2]
    assert "failed after audio was sent" in caplog.text
    no_tracebacks(caplog)
