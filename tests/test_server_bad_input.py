"""Bad input never takes the server down and always gets the documented JSON error."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _support_memory import memory_server, read_answer
from _support_server import (
    StartServer,
    json_of_raw_response,
    parse_frames,
    raw_exchange,
)


STREAM = "/v1/tts/stream"


async def post(base_url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url) as client:
        return await client.post(STREAM, **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(
    ("content", "code", "needle"),
    [
        (b"{not json", "invalid_request", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "invalid_request", "not valid JSON"),
        (b"[1, 2]", "invalid_request", "JSON object"),
        (b'"text"', "invalid_request", "JSON object"),
        (b"{}", "invalid_request", "missing required field 'text'"),
        (b'{"voice": "tara"}', "invalid_request", "missing required field 'text'"),
        (b'{"text": ""}', "invalid_request", "text is empty"),
        (b'{"text": "   \\n"}', "invalid_request", "text is empty"),
        (b"", "invalid_request", "not valid JSON"),
        # Nested past Python's recursion limit: the parser raises RecursionError.
        (b"[" * 100_000, "invalid_request", "not valid JSON"),
        (b'{"text": "hi", "x": ' + b"[" * 100_000, "invalid_request", "not valid JSON"),
    ],
)
async def test_malformed_bodies_get_400(
    start_server: StartServer, content: bytes, code: str, needle: str
) -> None:
    server = await start_server()
    response = await post(
        server.base_url, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == code
    assert needle in error["message"]


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b'{"text": "hi \\ud800 there"}', "text"),
        (b'{"text": "hi", "voice": "\\udc00"}', "voice"),
        (b'{"text": "hi", "x": {"y": ["ok", "\\ud83d"]}}', "x"),
        (b'{"text": "hi", "x": ' + b"[" * 500 + b'"\\ud800"' + b"]" * 500 + b"}", "x"),
        (b'{"text": "hi", "\\ud800": 1}', None),
    ],
)
async def test_text_that_is_not_valid_unicode_gets_400_not_500(
    start_server: StartServer, content: bytes, param: str | None
) -> None:
    # JSON can escape a lone surrogate; no engine can encode it. A 500 would
    # make clients fail over to every endpoint with the same request.
    server = await start_server()
    response = await post(
        server.base_url, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error.get("param")) == ("invalid_param", param)
    assert "lone surrogate" in error["message"]


@pytest.mark.parametrize(
    ("body", "key", "needle"),
    [
        ({"text": 5}, "text", "must be a string"),
        ({"text": ["a"]}, "text", "must be a string"),
        ({"text": "a", "voice": 3}, "voice", "string or null"),
        ({"text": "a", "voice": "nobody"}, "voice", "valid: tara, leah"),
        ({"text": "a", "timeout_s": "10"}, "timeout_s", "positive number"),
        ({"text": "a", "timeout_s": 0}, "timeout_s", "positive number"),
        ({"text": "a", "timeout_s": True}, "timeout_s", "positive number"),
        ({"text": "a", "temperature": "hot"}, "temperature", "must be a number"),
        ({"text": "a", "temperature": 9.0}, "temperature", "between 0 and 2"),
        ({"text": "a", "top_k": 1.5}, "top_k", "must be an integer"),
        ({"text": "a", "chunks": "3"}, "chunks", "must be an integer"),
        ({"text": "a", "chunk_samples": 0}, "chunk_samples", "between 1 and"),
        ({"text": "a", "overrun": 1}, "overrun", "true or false"),
        ({"text": "a", "frobnicate": 1}, "frobnicate", "unknown parameter"),
    ],
)
async def test_bad_parameters_get_400_invalid_param_naming_the_key(
    start_server: StartServer, body: dict[str, Any], key: str, needle: str
) -> None:
    server = await start_server()
    response = await post(server.base_url, json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_param"
    assert error["param"] == key
    assert key in error["message"] and needle in error["message"]


async def test_sampling_params_are_accepted_and_ignored(
    start_server: StartServer,
) -> None:
    server = await start_server()
    sampling = {"temperature": 0.6, "top_p": 0.9, "top_k": 40, "max_tokens": 1200}
    plain = await post(server.base_url, json={"text": "a", "chunks": 2})
    tuned = await post(server.base_url, json={"text": "a", "chunks": 2, **sampling})
    assert tuned.status_code == 200
    assert parse_frames(tuned.content)[1:-2] == parse_frames(plain.content)[1:-2]


async def test_text_too_long_gets_413(start_server: StartServer) -> None:
    server = await start_server(max_text_chars=100)
    ok = await post(server.base_url, json={"text": "x" * 100, "chunks": 1})
    too_long = await post(server.base_url, json={"text": "x" * 101})
    assert ok.status_code == 200
    assert too_long.status_code == 413
    error = error_of(too_long)
    assert error["code"] == "text_too_long"
    assert "101" in error["message"] and "100" in error["message"]


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded"]
)
async def test_wrong_content_type_gets_415(
    start_server: StartServer, content_type: str | None
) -> None:
    server = await start_server()
    headers = {} if content_type is None else {"content-type": content_type}
    response = await post(server.base_url, content=b'{"text": "a"}', headers=headers)
    assert response.status_code == 415
    assert error_of(response)["code"] == "invalid_request"


async def test_json_content_type_with_charset_is_accepted(
    start_server: StartServer,
) -> None:
    server = await start_server()
    response = await post(
        server.base_url,
        content=b'{"text": "a", "chunks": 1}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


async def test_oversized_body_is_refused_from_content_length_before_reading(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = memory_server(nursery, max_body_bytes=1000)
    # Headers promise 10 MB; no body byte is ever sent, yet the answer comes at once.
    client = await server.connect()
    await client.send_all(
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n"
    )
    answer = await read_answer(client)
    assert answer.status == 413 and answer.ended_at == 0.0
    assert answer.json()["error"]["code"] == "body_too_large"
    assert answer.headers["connection"] == "close"
    assert await client.receive_some(1) == b""  # and the connection closes


async def test_oversized_chunked_body_is_refused_once_past_the_limit(
    start_server: StartServer,
) -> None:
    server = await start_server(max_body_bytes=1000)
    piece = b"x" * 600
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    request = (
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 2  # never terminated
    )
    raw, closed = await raw_exchange(server.base_url, request, read_for_s=3)
    status, _, body = json_of_raw_response(raw)
    assert status == 413
    assert body["error"]["code"] == "body_too_large"
    assert closed


async def test_slow_incomplete_body_gets_408(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = memory_server(nursery, read_timeout_s=0.3)
    client = await server.connect()
    await client.send_all(
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"text": '
    )
    answer = await read_answer(client)
    assert answer.status == 408 and answer.ended_at == 0.3
    assert answer.json()["error"]["code"] == "request_timeout"
    assert answer.headers["connection"] == "close"
    assert await client.receive_some(1) == b""  # and the connection closes


async def test_incomplete_headers_are_dropped_after_the_read_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = memory_server(nursery, read_timeout_s=0.3)
    answer = await server.request(b"POST /v1/tts/str")
    assert answer.closed and answer.ended_at == 0.3
    assert answer.status is None and answer.body == b""


async def test_unknown_path_and_wrong_method(start_server: StartServer) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        missing = await client.get("/v2/nothing")
        wrong_method = await client.get(STREAM)
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert error_of(wrong_method)["code"] == "invalid_request"


async def test_server_still_serves_after_a_barrage_of_bad_requests(
    start_server: StartServer,
) -> None:
    server = await start_server(max_body_bytes=1000, read_timeout_s=0.2)
    bad = [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{",
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x00\x01\x02\x03" * 100,
    ]
    async with trio.open_nursery() as nursery:
        for request in bad:
            nursery.start_soon(
                partial(raw_exchange, server.base_url, request, read_for_s=1.0)
            )
    response = await post(server.base_url, json={"text": "still alive", "chunks": 1})
    assert response.status_code == 200
    assert parse_frames(response.content)[-1]["type"] == "eos"


async def test_an_unknown_parameter_names_every_one_the_engine_takes(
    start_server: StartServer,
) -> None:
    server = await start_server()
    response = await post(server.base_url, json={"text": "a", "frobnicate": 1})
    message = error_of(response)["message"]
    listed = message.split("this engine takes: ", 1)[1].split(", ")
    assert {"chunks", "temperature", "timeout_s", "seed"} <= set(listed)
    for name in listed:  # each one it names is one it knows
        response = await post(server.base_url, json={"text": "a", name: "?"})
        if response.status_code != 200:  # a string is a valid fail_code
            assert "unknown parameter" not in error_of(response)["message"], name
