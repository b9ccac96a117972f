"""Every answer carries the security headers, and no error body echoes the request's path.

The playground's policy allows exactly its own inline script and style (by
their hashes); every other answer's policy allows nothing at all.
"""

from __future__ import annotations

import re
from importlib import resources

import httpx
import pytest
from _support_server import StartServer, parse_frames, raw_exchange

from orpheus_trio.server.playground import inline_hashes
from orpheus_trio.server.security_headers import DEFAULT_CSP

FIXED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def assert_secured(response: httpx.Response, csp: str = DEFAULT_CSP) -> None:
    for name, value in FIXED.items():
        assert response.headers.get_list(name) == [value], name
    assert response.headers.get_list("content-security-policy") == [csp]
    assert "frame-ancestors 'none'" in csp


async def test_every_kind_of_answer_carries_the_security_headers(
    start_server: StartServer,
) -> None:
    server = await start_server(api_keys=("k",))
    key = {"Authorization": "Bearer k"}
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        answers = {
            "stream": await client.post("/v1/tts/stream", json={"text": "a", "chunks": 2}, headers=key),
            "in-band error": await client.post(
                "/v1/tts/stream", json={"text": "a", "chunks": 9, "chunk_samples": 2400,
                                        "rtf": 1.0, "timeout_s": 0.15}, headers=key,
            ),
            "400": await client.post("/v1/tts/stream", content=b"{", headers={
                **key, "content-type": "application/json"}),
            "401": await client.post("/v1/tts/stream", json={"text": "a"}),
            "404": await client.get("/nowhere"),
            "405": await client.get("/v1/tts/stream"),
            "system": await client.get("/v1/system"),
            "metrics": await client.get("/metrics"),
            "speech": await client.post("/v1/audio/speech", json={"input": "a", "response_format": "pcm"}, headers=key),
            "speech 400": await client.post("/v1/audio/speech", json={"text": "a"}, headers=key),
            "speech 401": await client.post("/v1/audio/speech", json={"input": "a"}),
        }  # fmt: skip
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "stream": 200, "in-band error": 200, "400": 400, "401": 401, "404": 404, "405": 405,
        "system": 200, "metrics": 200, "speech": 200, "speech 400": 400, "speech 401": 401,
    }  # fmt: skip
    assert parse_frames(answers["in-band error"].content)[-1]["code"] == "deadline_exceeded"
    for answer in answers.values():
        assert_secured(answer)


async def test_the_playground_may_run_only_its_own_script_and_style(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        page = await client.get("/")
    assert page.status_code == 200
    source = resources.files("orpheus_trio.server").joinpath("static/playground.html").read_text()
    scripts, styles = inline_hashes(source, "script"), inline_hashes(source, "style")
    assert len(scripts) == len(styles) == 1
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives == {
        "default-src": "'none'",
        "script-src": f"'{scripts[0]}'",
        "style-src": f"'{styles[0]}'",
        "connect-src": "'self'",
        "media-src": "'self' blob:",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    assert_secured(page, csp)
    # Nothing the hashes do not cover: no inline handlers, style attributes or other scripts.
    assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=|<script\s+src", source)


def test_a_changed_inline_script_gets_a_different_hash() -> None:
    one = inline_hashes("<script>a()</script>", "script")
    other = inline_hashes("<script>b()</script>", "script")
    assert one != other and one[0].startswith("sha256-")
    # The browser hashes the element's text exactly: sha256 of "a()" in base64.
    assert one == ["sha256-qVpDBgj7bpq5hMAcGp3AOc79J3Y1Z4HvySTwKrWDoy4="]


@pytest.mark.parametrize(
    "target",
    [b"/%3Cscript%3Ealert(1)%3C/script%3E", b"/<script>alert(1)</script>"],
)
async def test_a_404_does_not_echo_the_path(start_server: StartServer, target: bytes) -> None:
    server = await start_server()
    raw, _ = await raw_exchange(
        server.base_url, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n", read_for_s=3
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ")
    assert b"<" not in body and b"script" not in body
    assert b'"message": "no such endpoint"' in body
    assert b"x-content-type-options: nosniff" in head.lower()
