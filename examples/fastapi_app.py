"""A FastAPI app that streams speech to a browser as it is synthesized.

    pip install "orpheus-trio[examples]"
    python examples/fastapi_app.py          # then open http://127.0.0.1:8000/

``GET /speak?text=...`` answers a streaming WAV (the header first, then PCM as
it arrives), so an ``<audio>`` element starts playing before the speech is
complete. The client runs natively on uvicorn's asyncio loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from orpheus_trio import OrpheusTTS
from orpheus_trio.audio import wav_header

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
    async def speak(text: str = Query(min_length=1, max_length=2000)) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield wav_header()  # length unknown: the browser plays as it comes
            async for pcm in tts.stream(text):
                yield pcm

        return StreamingResponse(body(), media_type="audio/wav")

    return app


if __name__ == "__main__":
    import uvicorn
    from _asyncio_service import api_key, service_urls

    port = int(os.environ.get("PORT", "8000"))
    uvicorn.run(create_app(service_urls(), api_key()), host="127.0.0.1", port=port)
