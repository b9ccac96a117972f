"""Custom voices on the server: POST/DELETE /v1/voices, the list, and speech in a cloned voice."""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

import httpx
import pytest
import trio
from _support_llm import scripted_model_dir, snac_dir
from _support_server import StartServer, audio_of, json_of_raw_response, parse_frames, raw_exchange
from _support_voices import reference_wav

from orpheus_trio.local.synthesizer import LocalSynthesizer
from orpheus_trio.server.engines.orpheus import OrpheusEngine
from orpheus_trio.server.voice_upload import attach_voice_library

FRAMES = 6
ADMIN = "voices-admin-key-0123456789"


@cache
def base() -> LocalSynthesizer:
    return LocalSynthesizer.load(scripted_model_dir(FRAMES), snac_dir(), device="cpu")


def engine(directory: Path, *, can_clone: bool = True, admin: list[str] | None = None) -> OrpheusEngine:
    fresh = OrpheusEngine(LocalSynthesizer(base().lm, base().snac))
    args = argparse.Namespace(
        voices_dir=str(directory), can_clone=can_clone, voices_admin_key=[ADMIN] if admin is None else admin,
        snac=str(snac_dir()), device="cpu",
    )  # fmt: skip
    return attach_voice_library(fresh, args)  # type: ignore[return-value]


def upload(name: str, *clips: tuple[str, bytes]) -> dict[str, object]:
    files: list[tuple[str, tuple[str | None, bytes | str]]] = [("name", (None, name))]
    for text, audio in clips:
        files += [("audio", ("ref.wav", audio)), ("text", (None, text))]
    # Encoded up front: a refused upload is answered before its body is read, which
    # would leave httpx's streaming multipart generator unfinished.
    request = httpx.Request("POST", "http://voices/v1/voices", files=files)
    body = request.read()
    headers = {"content-type": request.headers["content-type"], "authorization": f"Bearer {ADMIN}"}
    return {"content": body, "headers": headers}


async def refused_post(url: str, **request: object) -> httpx.Response:
    """A POST the server answers before reading its body: sent from a thread with the
    sync client (the async client's body generator would be left unfinished)."""
    return await trio.to_thread.run_sync(lambda: httpx.post(url, timeout=30, **request))  # type: ignore[arg-type]


async def test_add_list_speak_and_delete_a_voice(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(engine=engine(tmp_path), api_keys=("synthesis-key-0123456789",))
    speak_headers = {"authorization": "Bearer synthesis-key-0123456789"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        added = await client.post("/v1/voices", **upload("me", ("hello world", reference_wav(3.0)), ("the fox", reference_wav(4.0, 44_100))))  # type: ignore[arg-type]
        assert added.status_code == 201, added.text
        assert added.json() == {"name": "me", "kind": "custom", "language": None, "references": 2, "seconds": 7.0}
        listed = (await client.get("/v1/voices")).json()["voices"]
        (mine,) = [v for v in listed if v["name"] == "me"]
        assert (mine["kind"], mine["language"], mine["engine"], mine["default"]) == ("custom", "en", "orpheus", False)
        assert [v["name"] for v in listed if v["kind"] == "stock"][0] == "tara"
        assert "me" in (await client.get("/v1/system")).json()["voices"]
        stream = await client.post("/v1/tts/stream", json={"text": "hello", "voice": "me"}, headers=speak_headers)
        assert stream.status_code == 200
        assert len(b"".join(audio_of(parse_frames(stream.content)))) == FRAMES * 2048 * 2
        speech = await client.post(
            "/v1/audio/speech", json={"model": "tts-1", "input": "hello", "voice": "me", "response_format": "pcm"},
            headers=speak_headers,
        )  # fmt: skip
        assert speech.status_code == 200 and len(speech.content) == FRAMES * 2048 * 2
        deleted = await client.delete("/v1/voices/me", headers={"authorization": f"Bearer {ADMIN}"})
        assert deleted.status_code == 200 and deleted.json() == {"name": "me", "deleted": True}
        gone = await client.post("/v1/tts/stream", json={"text": "hello", "voice": "me"}, headers=speak_headers)
        assert gone.status_code == 400 and "unknown voice 'me'" in gone.json()["error"]["message"]
        again = await client.delete("/v1/voices/me", headers={"authorization": f"Bearer {ADMIN}"})
        assert again.status_code == 404
    assert "me" not in server.engine.voices()


async def test_adding_voices_needs_the_admin_key(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(engine=engine(tmp_path), api_keys=("synthesis-key-0123456789",))
    request = upload("me", ("hello", reference_wav(3.0)))
    for key in ("synthesis-key-0123456789", "wrong", "Basic"):
        request["headers"] = {**request["headers"], "authorization": f"Bearer {key}"}  # type: ignore[dict-item]
        refused = await refused_post(server.base_url + "/v1/voices", **request)
        assert refused.status_code == 401
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        assert (await client.delete("/v1/voices/me", headers={"authorization": "Bearer synthesis-key-0123456789"})).status_code == 401
    assert not list(tmp_path.iterdir())


async def test_without_an_admin_key_adding_is_off(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(engine=engine(tmp_path, admin=[]))
    refused = await refused_post(server.base_url + "/v1/voices", **upload("me", ("hello", reference_wav(3.0))))
    assert refused.status_code == 403 and "--voices-admin-key" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("name", "clips", "status", "message"),
    [
        ("me", [("hello", reference_wav(1.5))], 400, "at least 3 s"),
        ("me", [("hello", reference_wav(31.0, 8_000))], 400, "at most 30 s"),
        ("me", [("hello", b"RIFF not really a wave file" * 50)], 400, "not an audio file"),
        ("../x", [("hello", reference_wav(3.0))], 400, "letters, digits"),
        ("a/b", [("hello", reference_wav(3.0))], 400, "letters, digits"),
        ("a\x00b", [("hello", reference_wav(3.0))], 400, "letters, digits"),
        ("tara", [("hello", reference_wav(3.0))], 409, "already exists"),
    ],
)
async def test_bad_uploads_are_refused_with_the_reason(
    start_server: StartServer, tmp_path: Path, name: str, clips: list[tuple[str, bytes]], status: int, message: str
) -> None:
    server = await start_server(engine=engine(tmp_path))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        refused = await client.post("/v1/voices", **upload(name, *clips))  # type: ignore[arg-type]
    assert refused.status_code == status, refused.text
    assert message in refused.json()["error"]["message"]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".json"]


async def test_a_duplicate_name_is_409_and_keeps_the_first(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(engine=engine(tmp_path))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        assert (await client.post("/v1/voices", **upload("me", ("hello", reference_wav(3.0))))).status_code == 201  # type: ignore[arg-type]
        second = await client.post("/v1/voices", **upload("me", ("fox", reference_wav(4.0)), ("the", reference_wav(3.0))))  # type: ignore[arg-type]
    assert second.status_code == 409
    assert len(server.engine.voice_cloner.library.get("me").references) == 1  # type: ignore[attr-defined]


async def test_a_200_mb_upload_is_refused_before_it_is_read(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(engine=engine(tmp_path))
    head = (
        "POST /v1/voices HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Authorization: Bearer {ADMIN}\r\nContent-Length: {200 * 1024 * 1024}\r\n\r\n"
    ).encode()
    # No body is sent at all: a server that tried to read it would wait for it (and time out).
    with trio.fail_after(10):
        raw, closed = await raw_exchange(server.base_url, head, read_for_s=5)
    status, _, body = json_of_raw_response(raw)
    assert status == 413 and body["error"]["code"] == "body_too_large" and closed


async def test_a_bad_name_in_the_delete_path(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(engine=engine(tmp_path))
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.delete("/v1/voices/a%00b", headers={"authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 400 and response.json()["error"]["param"] == "name"
        assert (await client.put("/v1/voices", content=b"")).status_code == 405


async def test_a_checkpoint_that_cannot_clone_answers_400_saying_why(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(engine=engine(tmp_path, can_clone=False))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        assert (await client.post("/v1/voices", **upload("me", ("hello", reference_wav(3.0))))).status_code == 201  # type: ignore[arg-type]
        refused = await client.post("/v1/tts/stream", json={"text": "hello", "voice": "me"})
        stock = await client.post("/v1/tts/stream", json={"text": "hello", "voice": "tara"})
    assert refused.status_code == 400
    assert "cannot clone" in refused.json()["error"]["message"] and "pretrained" in refused.json()["error"]["message"]
    assert stock.status_code == 200


def test_voices_dir_flags_need_each_other(tmp_path: Path) -> None:
    fresh = OrpheusEngine(LocalSynthesizer(base().lm, base().snac))
    with pytest.raises(ValueError, match="need --voices-dir"):
        attach_voice_library(fresh, argparse.Namespace(voices_dir=None, can_clone=True, voices_admin_key=[]))
    with pytest.raises(ValueError, match="voices admin key 1"):
        engine(tmp_path, admin=["has space"])


async def test_the_gateway_routes_a_custom_voice_to_the_worker_that_holds_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    from _support_gateway import start_gateway, start_worker

    holder = await start_worker(nursery, engine(tmp_path / "a"))  # type: ignore[arg-type]
    other = await start_worker(nursery, OrpheusEngine(LocalSynthesizer(base().lm, base().snac)))  # type: ignore[arg-type]
    gateway = await start_gateway(nursery, [other.base_url, holder.base_url])
    async with httpx.AsyncClient(timeout=60) as client:
        added = await client.post(holder.base_url + "/v1/voices", **upload("me", ("hello", reference_wav(3.0))))  # type: ignore[arg-type]
        assert added.status_code == 201
        assert "me" in (await client.get(holder.base_url + "/v1/system")).json()["voices"]
        with trio.fail_after(10):  # the gateway learns it at its next poll of the workers
            while "me" not in (await client.get(gateway.base_url + "/v1/system")).json()["voices"]:
                await trio.sleep(0.1)
        for _ in range(4):
            reply = await client.post(gateway.base_url + "/v1/tts/stream", json={"text": "hello", "voice": "me"})
            assert reply.status_code == 200
            assert len(b"".join(audio_of(parse_frames(reply.content)))) == FRAMES * 2048 * 2
        # The worker without the voice would have refused it.
        refused = await client.post(other.base_url + "/v1/tts/stream", json={"text": "hello", "voice": "me"})
        assert refused.status_code == 400
