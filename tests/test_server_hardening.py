"""Hostile input against a worker and a gateway (issue 20): no key reaches a
caller, bounded metric labels, no 500 on any JSON number, strict HTTP framing
(raw sockets), 100-continue only after the checks, clipped log fields."""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
from typing import Any

import httpx
import pytest
import trio
from _support_gateway import (
    error_answer,
    ndjson_answer,
    post_tts,
    start_gateway,
    start_scripted_worker,
    start_worker,
    wait_until,
)
from _support_server import StartServer, json_of_raw_response, raw_exchange

from orpheus_trio.server.access_log import ACCESS_LOGGER
from orpheus_trio.server.error_codes import ERROR_CODES, retry_after_header


STREAM = "/v1/tts/stream"
KEY = "Wk-SecretKey-9f3A7bQz"


def _error_body_answer(status: int, error: dict[str, Any], **headers: str) -> bytes:
    body = json.dumps({"error": error}).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        b"HTTP/1.1 %d Scripted\r\ncontent-type: application/json\r\n" % status
        + head.encode()
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


def _key_variants(key: str) -> dict[str, str]:
    return {
        "exact": key,
        "lowercased": key.lower(),
        "uppercased": key.upper(),
        "cut by one at the end": key[:-1],
        "cut by one at the start": key[1:],
        "first 8 chars": key[:8],
        "base64": base64.b64encode(key.encode()).decode(),
        "base64 of the header": base64.b64encode(f"Bearer {key}".encode()).decode(),
        "base64 of basic auth": base64.b64encode(f"user:{key}".encode()).decode(),
    }


def _assert_no_key(text: str) -> None:
    for name, form in _key_variants(KEY).items():
        assert form.lower() not in text.lower(), f"the key's {name} form reached the caller"


# -- 1, 2: the upstream key never reaches a caller ----------------------------------


@pytest.mark.parametrize("variant", list(_key_variants(KEY)))
async def test_a_400_echoing_any_form_of_the_key_is_answered_in_the_gateways_words(
    nursery: trio.Nursery, variant: str
) -> None:
    form = _key_variants(KEY)[variant]
    answer = _error_body_answer(
        400,
        {
            "code": "invalid_param",
            "message": f"check your header: got {form} here",
            "param": form,
            "extra": form,
        },
    )
    url = await start_scripted_worker(nursery, answer)
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None, upstream_api_key=KEY)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 400
    _assert_no_key(response.text)
    error = response.json()["error"]
    # Rebuilt from the gateway's own vocabulary: the worker's text is not passed
    # on, and its param is not one the caller sent.
    assert error == {
        "code": "invalid_param",
        "message": "the upstream worker refused the request (invalid_param)",
    }


@pytest.mark.parametrize(
    "answer",
    [
        _error_body_answer(500, {"code": KEY, "message": KEY.lower()}),
        _error_body_answer(401, {"code": "unauthorized", "message": f"bad {KEY[:-1]}"}),
        _error_body_answer(
            429, {"code": f"x{KEY}", "message": KEY}, **{"retry-after": "1"}
        ),
        ndjson_answer(
            [
                {"type": "chunk", "seq": 0, "audio": "AAAA"},
                {"type": "error", "code": KEY.upper(), "message": KEY},
            ]
        ),
        ndjson_answer([{"type": "error", "code": "engine_error", "message": KEY[1:]}]),
    ],
    ids=["500", "401", "429", "in-band after audio", "in-band before audio"],
)
async def test_no_other_upstream_error_passes_the_key_or_an_undocumented_code(
    nursery: trio.Nursery, answer: bytes
) -> None:
    url = await start_scripted_worker(nursery, answer)
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None, upstream_api_key=KEY)
    response = await post_tts(gw.base_url, {"text": "x"})
    _assert_no_key(response.text)
    if response.status_code == 200:
        error = json.loads(response.text.splitlines()[-1])
        assert error["type"] == "error"
    else:
        error = response.json()["error"]
    assert error["code"] in ERROR_CODES


# -- 3: bounded label cardinality ----------------------------------------------------


async def test_error_codes_from_engines_and_workers_do_not_grow_the_metrics(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url], hedge_ttfb_ms=None)
    async with httpx.AsyncClient(timeout=10) as http:
        for target in (worker.base_url, gw.base_url):
            sizes = []
            for batch in range(2):
                for n in range(40):
                    code = f"c{batch}-{n}"
                    body = {"text": "x", "chunks": 2, "error_after": 1, "error_code": code}
                    response = await http.post(target + STREAM, json=body)
                    assert response.status_code == 200
                    assert response.text.splitlines()[-1].startswith('{"type":"error"')
                metrics = (await http.get(target + "/metrics")).text
                sizes.append(len(metrics))
            codes = set(re.findall(r'orpheus_errors_total\{code="([^"]*)"\}', metrics))
            assert codes <= ERROR_CODES | {"other"}
            # 40 more distinct codes add no series (only counts change).
            assert sizes[1] - sizes[0] < 100


# -- 4, 11: no 500 for any JSON number; errors in the request's terms -----------------

HOSTILE_NUMBERS = [
    "1" + "0" * 400,
    "-" + "9" * 400,
    "7" * 4299,
    "7" * 5000,  # past Python's int-to-str digit limit
    "1e308",
    "-1e308",
    "1e999",  # a float past the range: json makes it inf
    "-1e999",
    "1e-400",
    "-0.0",
    "0",
    "NaN",
    "Infinity",
    "-Infinity",
    "9223372036854775808",
    "18446744073709551616",
]
NUMERIC_PARAMS = [
    "timeout_s", "chunks", "chunk_samples", "seed", "ttfb_ms", "rtf", "stall_s",
    "retry_after_s", "fail_status", "temperature", "top_p", "top_k", "max_tokens",
    "repetition_penalty", "error_after",
]  # fmt: skip
#: What a message about a request must not expose.
PYTHON_INTERNALS = ("sys.", "int_max_str_digits", "recursion", "Traceback", "Error(")


async def _fuzz_numbers(
    base_url: str, params: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for param in params:
            for number in HOSTILE_NUMBERS:
                content = b'{"text": "x", "chunks": 1, "%s": %s}' % (
                    param.encode(),
                    number.encode(),
                )
                if param == "chunks":
                    content = b'{"text": "x", "chunks": %s}' % number.encode()
                response = await http.post(
                    base_url + STREAM,
                    content=content,
                    headers={"content-type": "application/json"},
                )
                assert response.status_code in (200, 400), (param, number[:20])
                if response.status_code == 400:
                    message = response.json()["error"]["message"]
                    assert len(message) < 300, (param, number[:20], message[:100])
                    assert not any(word in message for word in PYTHON_INTERNALS), message
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()


async def test_no_json_number_in_any_parameter_is_a_500_on_a_worker(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server()
    await _fuzz_numbers(server.base_url, NUMERIC_PARAMS, caplog)


async def test_no_json_number_is_a_500_through_the_gateway(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url], hedge_ttfb_ms=None)
    await _fuzz_numbers(gw.base_url, ["timeout_s", "chunks", "temperature"], caplog)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b'{"text": "x", "n": ' + b"7" * 5000 + b"}", "more digits than the limit"),
        (b'{"text": "x", "n": ' + b"[" * 100_000, "nested too deeply"),
        (b'{"text": "x", "timeout_s": -' + b"9" * 400 + b"}", "an integer of 400 digits"),
    ],
)
async def test_errors_say_what_was_wrong_in_the_requests_terms(
    start_server: StartServer, content: bytes, said: str
) -> None:
    server = await start_server()
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            server.base_url + STREAM,
            content=content,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert said in message
    assert not any(word in message for word in PYTHON_INTERNALS)


# -- 5: Retry-After is capped --------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "passed_on"),
    [("1e308", "3600"), ("1" + "0" * 308, "3600"), ("86400", "3600"), ("inf", None)],
)
async def test_a_workers_huge_retry_after_is_capped(
    nursery: trio.Nursery, given: str, passed_on: str | None
) -> None:
    url = await start_scripted_worker(
        nursery, error_answer(429, "overloaded", **{"retry-after": given})
    )
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 429
    assert response.headers.get("retry-after") == passed_on  # inf: no advice at all


def test_retry_after_header_values() -> None:
    assert retry_after_header(2.1) == b"3"
    assert retry_after_header(0) == b"0"
    assert retry_after_header(float("inf")) == b"3600"
    assert retry_after_header(1e308) == b"3600"
    assert retry_after_header(float("nan")) is None
    assert retry_after_header(-1) is None
    assert retry_after_header(None) is None


# -- 7: Expect: 100-continue only after the checks -------------------------------------


def _post_head(length: int, *extra: bytes) -> bytes:
    return (
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"".join(extra)
        + b"Content-Length: %d\r\n\r\n" % length
    )


@pytest.mark.parametrize(
    ("length", "auth", "status"),
    [
        (10_000_000, b"Authorization: Bearer right-key\r\n", 413),
        (20, b"Authorization: Bearer wrong-key\r\n", 401),
        (20, b"", 401),
    ],
)
async def test_a_refused_expect_100_request_gets_no_100_and_is_not_uploaded(
    start_server: StartServer, length: int, auth: bytes, status: int
) -> None:
    server = await start_server(api_keys=("right-key",))
    raw, closed = await raw_exchange(
        server.base_url,
        _post_head(length, auth, b"Expect: 100-continue\r\n"),
        read_for_s=2,
    )
    assert b" 100 " not in raw.split(b"\r\n", 1)[0]
    assert raw.count(b"HTTP/1.1 ") == 1
    got, _, _ = json_of_raw_response(raw)
    assert got == status
    assert closed


async def test_an_accepted_expect_100_request_gets_100_then_streams(
    start_server: StartServer,
) -> None:
    server = await start_server(api_keys=("right-key",))
    body = b'{"text": "hi", "chunks": 2}'
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            _post_head(
                len(body),
                b"Authorization: Bearer right-key\r\n",
                b"Expect: 100-continue\r\n",
            )
        )
        with trio.fail_after(2):  # well before a client's ~1 s wait would send it anyway
            first = await stream.receive_some(65536)
        assert first.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(body)
        answer = bytearray()
        with trio.fail_after(5):
            while b'"type":"eos"' not in answer:
                answer += await stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")


# -- 8: strict framing (RFC 9112 §6.3) -----------------------------------------------

BODY = b'{"text": "hi", "chunks": 1}'
NEXT = b"GET /v1/system HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Content-Length and chunked: a front proxy may frame it by the other one.
        _post_head(len(BODY), b"Transfer-Encoding: chunked\r\n")
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d, %d\r\n\r\n%s" % (len(BODY), len(BODY), BODY),
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), len(BODY), BODY),
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Note: a\r\n folded\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
        b"POST /v1/tts/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length:\r\n %d\r\n\r\n%s" % (len(BODY), BODY),
    ],
    ids=["cl-and-chunked", "cl-list", "cl-twice", "obs-fold", "obs-folded-cl"],
)
@pytest.mark.parametrize("target", ["worker", "gateway"])
async def test_ambiguous_framing_is_refused_and_the_connection_closed(
    nursery: trio.Nursery, request_bytes: bytes, target: str
) -> None:
    worker = await start_worker(nursery)
    base_url = worker.base_url
    if target == "gateway":
        base_url = (await start_gateway(nursery, [worker.base_url])).base_url
    # A pipelined request after it must not be served: the connection closes.
    raw, closed = await raw_exchange(base_url, request_bytes + NEXT, read_for_s=3)
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert raw.count(b"HTTP/1.1 ") == 1
    assert closed
    assert worker.engine.requests_started == 0


async def test_plain_pipelined_requests_are_still_served(
    start_server: StartServer,
) -> None:
    server = await start_server()
    raw, _ = await raw_exchange(
        server.base_url,
        _post_head(len(BODY)) + BODY + NEXT + NEXT,
        read_for_s=1,
    )
    assert raw.count(b"HTTP/1.1 200 ") == 3


# -- 9, 11: the access log -------------------------------------------------------------


async def test_the_gateway_clips_a_callers_unchecked_voice_in_its_log(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x", "voice": "v" * 10_000})
    assert response.status_code == 400
    # The gateway logs once its answer is out (after the caller has it).
    await wait_until(lambda: len([r for r in caplog.records if r.name == ACCESS_LOGGER]) == 2)
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert lines and all(len(line) < 2000 for line in lines)
    (gateway_line,) = [
        r for r in caplog.records if r.name == ACCESS_LOGGER and r.request["engine"] == "gateway"
    ]
    assert gateway_line.request["voice"].startswith("v" * 128 + "... (10000 chars)")


async def test_after_a_half_close_the_log_says_what_was_sent(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    server = await start_server()
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    body = b'{"text": "hi", "chunks": 3}'
    received = []
    for _ in range(10):
        sock = trio.socket.socket()
        await sock.connect((host, int(port)))
        await sock.send(_post_head(len(body)) + body)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        with trio.move_on_after(2):
            while data := await sock.recv(65536):
                got += data
        sock.close()
        received.append(got)
    await trio.sleep(0.2)
    records = [r.request for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(records) == 10
    for record in records:
        if record["sent_bytes"] == 0:
            assert record["status"] == 499
        else:
            assert record["status"] == 200
    # Whatever the caller got, the log did not claim more.
    assert sum(1 for r in records if r["status"] == 200) <= sum(1 for g in received if g)
