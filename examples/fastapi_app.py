"""A FastAPI app that streams speech to a browser as it is synthesized.

    pip install "orpheus-trio[examples]"
    python examples/fastapi_app.py          # then open http://127.0.0.1:8000/

``GET /speak?text=...&voice=...`` answers a streaming WAV (the header first,
then PCM as it arrives), so an ``<audio>`` element starts playing before the
speech is complete. The client runs natively on uvicorn's asyncio loop.

``speech_response`` opens the stream before answering, so a failure before
any audio is an HTTP error with a JSON body (a bad voice: 400, a refused key:
401, every worker down: 502 or 503 with Retry-After) instead of a 200 with an
empty body; a failure mid-speech cuts the body, which the browser sees as an
error rather than a clean, shorter clip.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, Response

from orpheus_trio import OrpheusTTS
from orpheus_trio.integrations.asgi import speech_response

PAGE = """<!doctype html><title>orpheus-trio</title>
<form onsubmit="a.src='/speak?text='+encodeURIComponent(t.value);a.play();return false">
<input id=t size=60 value="Hello from FastAPI."> <button>Speak</button></form>
<audio id=a controls></audio>"""


def create_app(urls: list[str], api_key: str | None = None) -> FastAPI:
    tts = OrpheusTTS(urls, api_key=api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with tts:  # one client (one connection pool) for the app's life
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/speak")
    async def speak(
        text: str = Query(min_length=1, max_length=2000), voice: str | None = None
    ) -> Response:
        return await speech_response(tts, text, voice)  # WAV, streamed as it comes

    return app


if __name__ == "__main__":
    import uvicorn
    from _asyncio_service import api_key, service_urls

    port = int(os.environ.get("PORT", "8000"))
    uvicorn.run(create_app(service_urls(), api_key()), host="127.0.0.1", port=port)
