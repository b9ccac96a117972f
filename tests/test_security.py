"""Hostile and careless surroundings: the API key stays secret, redirects are not followed,
TLS is verified unless the user turns it off (and is warned), and the server bounds what a
client may send (headers, idle and slow connections; body and text limits are in
tests/test_server_bad_input.py).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import ssl
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _support_faults import (
    Conn,
    RawServer,
    Reply,
    body,
    closed_port_url,
    error_line,
    expected_audio,
    good,
    make_tls,
    reset_after,
    reset_before_headers,
    silence_after,
    status,
)
from _support_server import StartServer, raw_exchange

from orpheus_trio import Hedging, OrpheusTTS
from orpheus_trio.protocol.frames import encode_chunk, encode_error
from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream
from orpheus_trio.transports.base import StreamRequest
from orpheus_trio.transports.trio import InsecureTransportWarning


KEY = "sk-live-0123456789abcdef-SECRET"
#: The TLS tests make a certificate with ``cryptography``; without it they skip.
needs_cryptography = pytest.mark.skipif(
    importlib.util.find_spec("cryptography") is None,
    reason="cryptography not installed",
)
TRANSPORTS = ["trio", "httpx"]
MALFORMED = b'{"type": "chunk", "seq": not-json\n'


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and the members of any exception group."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            todo += list(current.exceptions)


def assert_hidden(error: BaseException) -> None:
    """No text a user could print or log about ``error`` holds the key."""
    text = "".join(traceback.format_exception(error))
    for member in chain(error):
        text += str(member) + repr(member) + repr(vars(member))
        request = vars(member).get("_request")  # httpx errors' request, when set
        if isinstance(request, httpx.Request):
            text += repr(request) + repr(request.headers) + str(request.url)
        if isinstance(member, httpx.HTTPStatusError):
            text += repr(member.response.headers) + member.response.text
    assert KEY not in text


def assert_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(vars(record))
    assert KEY not in caplog.text


FAULTS: dict[str, Reply] = {
    "401": status(401, "unauthorized"),
    "500": status(500, "internal"),
    "reset": reset_before_headers(),
    "reset mid-body": reset_after([encode_chunk(0, b"\x00\x01")]),
    "malformed": body([MALFORMED]),
    "error frame": body([error_line("engine_error")]),
    "silence": silence_after([]),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_api_key_is_sent_but_never_shown(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    transport: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = RawServer(lambda n: FAULTS[fault])
    await server.start(nursery)
    with trio.fail_after(10):
        async with OrpheusTTS(
            server.url,
            api_key=KEY,
            transport=transport,  # type: ignore[arg-type]
            hedge_ttfb_ms=None,
            hedging=Hedging(max_attempts=2),
            timeout_s=0.5,
        ) as tts:
            assert KEY not in repr(tts) and KEY not in str(vars(tts))
            with pytest.raises(Exception) as caught:
                await tts.synthesize("secret test")
    assert_hidden(caught.value)
    assert_not_logged(caplog)
    # The key did travel, as a bearer token, to the endpoint it was meant for.
    assert f"Bearer {KEY}".encode() in server.heads[0]


def echoing(server: RawServer, shape: str) -> Reply:
    """A server that writes the Authorization header it got back into its error:
    in a JSON 401 (code, message, a header), a plain-text 500, or an error frame."""

    async def reply(conn: Conn) -> None:
        head = server.heads[conn.index].decode("latin-1")
        sent = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("authorization:")
        )
        words = f"you sent {sent!r}, i.e. {sent.lower()}"
        if shape == "error frame":
            await conn.send_stream_head()
            await conn.send_piece(encode_error(sent, words))
            await conn.end_body()
            return
        if shape == "json 401":
            payload = json.dumps({"error": {"code": sent, "message": words}}).encode()
        else:
            payload = words.encode()
        headers = [("Content-Length", str(len(payload))), ("X-Echo", sent)]
        await conn.send_head(401 if shape == "json 401" else 500, headers)
        await conn.stream.send_all(payload)
        await conn.until_client_closes()

    return reply


@pytest.mark.parametrize("shape", ["json 401", "plain 500", "error frame"])
async def test_a_server_echoing_the_authorization_header_never_shows_the_key(
    nursery: trio.Nursery, shape: str
) -> None:
    server = RawServer(lambda n: echoing(server, shape))
    await server.start(nursery)
    with trio.fail_after(10):
        async with OrpheusTTS(
            server.url, api_key=KEY, hedge_ttfb_ms=None, hedging=Hedging(max_attempts=1)
        ) as tts:
            with pytest.raises(Exception) as caught:
                await tts.synthesize("secret test")
    assert_hidden(caught.value)
    assert KEY.lower() not in "".join(traceback.format_exception(caught.value)).lower()
    assert "you sent 'Bearer <api key>'" in str(caught.value)  # the rest of its words stay


#: Forms of the key a server, a proxy or an encoding header may echo back.
KEY_FORMS = {
    "upper case": KEY.upper(),
    "a prefix of 12": KEY[:12],
    "hex": KEY.encode().hex(),
    "base64 of the header": base64.b64encode(f"Bearer {KEY}".encode()).decode(),
    "url-safe base64, no padding": base64.urlsafe_b64encode(KEY.encode()).decode().rstrip("="),
}


def echoing_form(form: str, shape: str) -> Reply:
    """A server that writes a form of the key into its status error, its in-band
    error frame, or a malformed header line the HTTP layer quotes."""

    async def reply(conn: Conn) -> None:
        echoed = KEY_FORMS[form]
        if shape == "error frame":
            await conn.send_stream_head()
            await conn.send_piece(encode_error("engine_error", f"saw {echoed}"))
            await conn.end_body()
            return
        if shape == "chunk line mid-stream":
            await conn.send_stream_head()
            await conn.send_piece(encode_chunk(0, b"\x00\x01"))
            await trio.sleep(0.05)  # the client has its first audio: the race is won
            await conn.stream.send_all(echoed.encode() + b"\r\n")
            await conn.until_client_closes()
            return
        if shape == "malformed header":
            await conn.stream.send_all(f"HTTP/1.1 200 OK\r\n{echoed}\r\n\r\n".encode())
            await conn.until_client_closes()
            return
        payload = json.dumps({"error": {"code": "unauthorized", "message": echoed}}).encode()
        await conn.send_head(401, [("Content-Length", str(len(payload))), ("X-Echo", echoed)])
        await conn.stream.send_all(payload)
        await conn.until_client_closes()

    return reply


@pytest.mark.parametrize(
    "shape", ["json 401", "error frame", "malformed header", "chunk line mid-stream"]
)
@pytest.mark.parametrize("form", KEY_FORMS)
async def test_no_echoed_form_of_the_key_reaches_an_exception(
    nursery: trio.Nursery, form: str, shape: str
) -> None:
    server = RawServer(lambda n: echoing_form(form, shape))
    await server.start(nursery)
    with trio.fail_after(10):
        async with OrpheusTTS(
            server.url, api_key=KEY, hedge_ttfb_ms=None, hedging=Hedging(max_attempts=1)
        ) as tts:
            with pytest.raises(Exception) as caught:
                await tts.synthesize("secret test")
    text = "".join(traceback.format_exception(caught.value))
    for member in chain(caught.value):
        text += str(member) + repr(vars(member))
        if isinstance(member, httpx.HTTPStatusError):
            text += repr(member.response.headers) + member.response.text
    echoed = KEY_FORMS[form]
    key_part = echoed[12:] if form == "base64 of the header" else echoed  # past "Bearer "
    for i in range(len(key_part) - 7):  # not 8 characters of it in a row
        assert key_part[i : i + 8].lower() not in text.lower(), (key_part[i : i + 8], text)
    # Echoed and blanked, or (the hex, read as a chunk size) never echoed at all.
    assert "<api key>" in text or "chunk size overflows" in text


async def test_api_key_hidden_on_refused_connection_and_in_request_reprs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with OrpheusTTS(closed_port_url(), api_key=KEY, hedge_ttfb_ms=None) as tts:
        with pytest.raises(httpx.ConnectError) as caught:
            await tts.synthesize("secret test")
        request = tts._request(  # the request object a transport is handed
            tts._make_call("x", None, None, {}), tts.base_urls[0], "id", trio.current_time()
        )
    assert_hidden(caught.value)
    assert_not_logged(caplog)
    assert KEY in request.headers["Authorization"]
    assert KEY not in repr(request) and KEY not in str(request)
    assert isinstance(request, StreamRequest)


async def test_api_key_hidden_in_the_audio_stream_and_success_logs(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = RawServer(lambda n: good())
    await server.start(nursery)
    async with OrpheusTTS(server.url, api_key=KEY) as tts:
        async with tts.open_stream("hello") as audio:
            assert KEY not in repr(audio) and KEY not in repr(vars(audio))
            assert b"".join([pcm async for pcm in audio]) == expected_audio(0)
        assert all(KEY not in repr(s) for s in tts.endpoints())
    assert_not_logged(caplog)


async def test_server_never_logs_or_echoes_keys(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = KEY[:-1] + "X"  # a near miss must not be echoed either
    server = await start_server(api_keys=(KEY,))
    answers = []
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for headers in (
            {"Authorization": f"Bearer {KEY}"},
            {"X-API-Key": KEY},
            {"Authorization": f"Bearer {wrong}"},
            {"X-API-Key": wrong},
            {"Authorization": KEY},  # no scheme
        ):
            response = await http.post(
                "/v1/tts/stream", json={"text": "hi", "nonsense": 1}, headers=headers
            )
            answers.append(response)
            response = await http.post(
                "/v1/tts/stream", json={"text": "hi"}, headers=headers
            )
            answers.append(response)
    assert [r.status_code for r in answers[1::2]] == [200, 200, 401, 401, 401]
    for response in answers:
        assert KEY not in response.text and wrong not in response.text
        assert KEY not in str(response.headers) and wrong not in str(response.headers)
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        assert KEY not in text and wrong not in text
    assert any(r.name == "orpheus_trio.server.access" for r in caplog.records)


# -- redirects ------------------------------------------------------------------------


def redirect_to(location: str, code: int) -> Reply:
    async def reply(conn: Any) -> None:
        await conn.send_head(
            code,
            [("Location", location), ("Content-Length", "0"), ("Connection", "close")],
        )
        await conn.until_client_closes()

    return reply


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(
    nursery: trio.Nursery, code: int, transport: str
) -> None:
    elsewhere = RawServer(lambda n: good())
    await elsewhere.start(nursery)
    server = RawServer(lambda n: redirect_to(elsewhere.url + "/v1/tts/stream", code))
    await server.start(nursery)
    with trio.fail_after(10):
        async with OrpheusTTS(
            server.url,
            api_key=KEY,
            transport=transport,  # type: ignore[arg-type]
            hedge_ttfb_ms=None,
        ) as tts:
            with pytest.raises(httpx.HTTPStatusError) as caught:
                await tts.synthesize("hello")
    assert caught.value.response.status_code == code
    assert server.requests == 1  # a 3xx is an answer, not retried
    assert elsewhere.requests == 0  # and the key never went to the other host
    assert_hidden(caught.value)


# -- TLS ----------------------------------------------------------------------------


async def start_tls_server(
    nursery: trio.Nursery, tmp_path: Path
) -> tuple[RawServer, Path]:
    """A server streaming good audio over TLS with a fresh self-signed CA, and that CA's file."""
    server_context, ca = make_tls(tmp_path)
    server = RawServer(lambda n: good())
    await server.start(nursery, server_context)
    return server, ca


@needs_cryptography
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tls_is_verified_by_default(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    server, _ = await start_tls_server(nursery, tmp_path)
    with trio.fail_after(10):
        async with OrpheusTTS(
            server.url,
            api_key=KEY,
            transport=transport,  # type: ignore[arg-type]
            hedge_ttfb_ms=None,
            hedging=Hedging(max_attempts=1),
        ) as tts:
            with pytest.raises(httpx.ConnectError) as caught:
                await tts.synthesize("hello")
    assert any(
        isinstance(e, ssl.SSLCertVerificationError) or "certificate" in str(e).lower()
        for e in chain(caught.value)
    )
    assert server.requests == 0  # nothing, key included, was sent to the impostor
    assert_hidden(caught.value)


@needs_cryptography
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tls_with_a_trusted_ca_works_without_warning(
    nursery: trio.Nursery, tmp_path: Path, transport: str, recwarn: Any
) -> None:
    server, ca = await start_tls_server(nursery, tmp_path)
    trust = ssl.create_default_context(cafile=str(ca))
    async with OrpheusTTS(
        server.url,
        transport=transport,  # type: ignore[arg-type]
        ssl_context=trust,
    ) as tts:
        assert await tts.synthesize("hello") == expected_audio(0)
    assert not [w for w in recwarn if issubclass(w.category, InsecureTransportWarning)]


@needs_cryptography
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tls_verification_off_only_when_asked_and_with_a_warning(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    server, _ = await start_tls_server(nursery, tmp_path)
    with pytest.warns(InsecureTransportWarning, match="verification is off"):
        tts = OrpheusTTS(server.url, transport=transport, verify=False)  # type: ignore[arg-type]
    async with tts:
        assert await tts.synthesize("hello") == expected_audio(0)


# -- server limits ------------------------------------------------------------------------


async def test_server_refuses_huge_headers_and_keeps_serving(
    start_server: StartServer,
) -> None:
    server = await start_server(read_timeout_s=2.0)
    for size in (70_000, 4_000_000):
        request = (
            b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * size
            + b"\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
            + b'{"text":"hi"}'
        )
        with trio.fail_after(5):
            try:
                raw, closed = await raw_exchange(server.base_url, request, read_for_s=3)
            except trio.BrokenResourceError:
                raw, closed = b"", True  # cut off while still sending: refused as well
        assert closed
        assert raw == b"" or raw.startswith(b"HTTP/1.1 431")
    async with OrpheusTTS(server.base_url) as tts:
        assert await tts.synthesize("still here") == b"".join(
            expected_stream("still here", None, {})
        )


async def test_idle_and_slow_connections_are_closed_and_do_not_block_others(
    start_server: StartServer,
) -> None:
    """300 connections that never finish their headers (slowloris) are all dropped after
    ``read_timeout_s``; meanwhile the server answers a real client at once."""
    server = await start_server(SyntheticEngine(), read_timeout_s=2.5)
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    # From another address than the real client's: past the per-address caps
    # (max_head_waits_per_client) the server closes them as soon as accepted.
    idle = [
        await trio.open_tcp_stream(host, int(port), local_address="127.0.0.2")
        for _ in range(300)
    ]
    for stream in idle[::2]:
        await stream.send_all(
            b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\n"
        )  # never ends
    try:
        with trio.fail_after(1.5):  # well before the idle ones time out
            async with OrpheusTTS(server.base_url) as tts:
                assert await tts.synthesize("hello") == b"".join(
                    expected_stream("hello", None, {})
                )
        closed = 0
        with trio.fail_after(8.0):
            for stream in idle:
                try:
                    if await stream.receive_some(1024) == b"":
                        closed += 1
                except trio.BrokenResourceError:
                    closed += 1
        assert closed == len(idle)
    finally:
        for stream in idle:
            await stream.aclose()
