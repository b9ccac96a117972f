"""The app's side of the Engine contract, with small hand-written engines."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
from _support_server import StartServer, audio_of, parse_frames

from orpheus_trio.server import EngineError, Hints, InvalidParam
from orpheus_trio.server.engine import Piece


class ScriptedEngine:
    """Yields a fixed script of pieces, then raises ``fail`` if given."""

    name = "scripted"

    def __init__(self, script: list[Piece], fail: BaseException | None = None) -> None:
        self.script = script
        self.fail = fail
        self.closed = 0

    def voices(self) -> list[str]:
        return ["only"]

    def validate(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        if set(params) - {"timeout_s"}:
            raise InvalidParam(min(set(params) - {"timeout_s"}), "unknown parameter")
        return params

    async def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        try:
            for piece in self.script:
                yield piece
            if self.fail is not None:
                raise self.fail
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        return None


async def stream(server_url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server_url) as client:
        return await client.post("/v1/tts/stream", json={"text": "contract"})


async def test_hints_become_metrics_frames_and_empty_pieces_are_skipped(
    start_server: StartServer,
) -> None:
    engine = ScriptedEngine(
        [Hints({"queue_depth": 7}), b"\x01\x00", b"", b"\x02\x00\x03\x00"]
    )
    server = await start_server(engine)
    frames = parse_frames((await stream(server.base_url)).content)
    assert [f["type"] for f in frames] == [
        "metrics",
        "metrics",
        "chunk",
        "chunk",
        "metrics",
        "eos",
    ]
    assert frames[1] == {"type": "metrics", "queue_depth": 7}
    assert audio_of(frames) == [b"\x01\x00", b"\x02\x00\x03\x00"]
    assert frames[-1] == {"type": "eos", "chunks": 2, "samples": 3}
    assert engine.closed == 1


async def test_engine_status_error_before_output_is_a_real_http_answer(
    start_server: StartServer,
) -> None:
    engine = ScriptedEngine(
        [], EngineError("overloaded", "upstreams busy", status=429, retry_after_s=1.5)
    )
    server = await start_server(engine)
    response = await stream(server.base_url)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json() == {
        "error": {"code": "overloaded", "message": "upstreams busy"}
    }


async def test_engine_status_error_after_output_is_in_band(
    start_server: StartServer,
) -> None:
    engine = ScriptedEngine(
        [b"\x00\x00"], EngineError("overloaded", "late", status=429)
    )
    server = await start_server(engine)
    frames = parse_frames((await stream(server.base_url)).content)
    assert frames[-1] == {"type": "error", "code": "overloaded", "message": "late"}


async def test_engine_bugs_become_internal_errors_and_the_server_survives(
    start_server: StartServer,
) -> None:
    before = await start_server(ScriptedEngine([], RuntimeError("boom")))
    response = await stream(before.base_url)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
    assert "boom" not in response.text  # internals stay in the server log

    odd = await start_server(ScriptedEngine([b"\x00\x00", b"\x00"]))
    frames = parse_frames((await stream(odd.base_url)).content)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "internal"
    assert len(audio_of(frames)) == 1

    again = await stream(odd.base_url)
    assert again.status_code == 200
