"""The gateway's trust boundary (issue 30): no text a worker writes reaches a
caller, so there is nothing to redact and no guessing oracle; the service
endpoints show checked fields and categories, never upstream text."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest
import trio
from _support_gateway import (
    RecordingEngine,
    error_answer,
    ndjson_answer,
    post_tts,
    start_gateway,
    start_scripted_worker,
    start_worker,
)
from _support_server import audio_of, parse_frames
from test_client_e2e import closed_port_url

from orpheus_trio.protocol.frames import encode_chunk
from orpheus_trio.server import ServerConfig
from orpheus_trio.server.gateway.service import Gateway
from orpheus_trio.server.gateway.vocabulary import checked_name

#: An upstream key that shares an 8-character piece ("Upstream") with the
#: gateway's own words ("upstream_error", "every upstream is busy").
KEY = "UpstreamKey-7f3A9bQz2LmX8pR4tN6"
_PCM = b"\x01\x00\x02\x00"


async def _raw_exchange(base_url: str, request: bytes) -> bytes:
    """Send ``request`` as it is and read the whole answer (the server closes)."""
    host, port = base_url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        answer = b""
        with trio.fail_after(10):
            while data := await stream.receive_some(65536):
                answer += data
    return answer


def _post(path: str, body: dict[str, Any]) -> bytes:
    content = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer app-key\r\nx-request-id: oracle-probe\r\n"
        f"connection: close\r\ncontent-length: {len(content)}\r\n\r\n"
    ).encode() + content


def _without_timings(answer: bytes) -> bytes:
    """The answer less its ``Date`` header (the only value that depends on when)."""
    return re.sub(rb"(?im)^date: [^\r\n]*\r\n", b"", answer)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/tts/stream", {"text": "hello"}),
        ("/v1/audio/speech", {"model": "tts-1", "input": "hello"}),
    ],
)
async def test_a_caller_cannot_tell_a_voice_holding_a_piece_of_the_upstream_key(
    nursery: trio.Nursery, path: str, body: dict[str, Any]
) -> None:
    # An honest worker answers "unknown voice '<candidate>'". If the gateway's
    # answer depended on whether the candidate is a piece of its key, a caller
    # with an app key could recover the key piece by piece (issue 30, 1).
    worker = await start_worker(
        nursery, RecordingEngine(offered=["tara", "leo"]), api_keys=(KEY,)
    )
    gw = await start_gateway(
        nursery,
        [worker.base_url],
        hedge_ttfb_ms=None,
        upstream_api_key=KEY,
        api_keys=("app-key",),
    )
    candidates = {
        "a piece of the key": KEY[4:12],
        "the same piece, case swapped": KEY[4:12].swapcase(),
        "the whole key": KEY,
        "no piece of the key": "Zq9Wm3Xy",
        "another miss": "q" * len(KEY),
    }
    answers = {
        name: _without_timings(
            await _raw_exchange(gw.base_url, _post(path, {**body, "voice": voice}))
        )
        for name, voice in candidates.items()
    }
    first = answers["no piece of the key"]
    assert first.startswith(b"HTTP/1.1 400 ")
    for name, answer in answers.items():
        assert answer == first, f"{name!r} got another answer:\n{answer!r}\n{first!r}"
    assert b"tara, leo" in first  # the gateway's own, checked voice list
    assert b"pstream key>" not in first.lower()  # nothing was redacted: nothing to


async def test_a_caller_cannot_tell_a_parameter_name_holding_the_upstream_key(
    nursery: trio.Nursery,
) -> None:
    # A worker names an unknown parameter in "param"; the client in the gateway
    # reads that answer through the upstream key's redactor. The caller's name
    # must come back as the caller spelled it, whether or not it holds the key.
    worker = await start_worker(nursery, api_keys=(KEY,))
    gw = await start_gateway(
        nursery,
        [worker.base_url],
        hedge_ttfb_ms=None,
        upstream_api_key=KEY,
        api_keys=("app-key",),
    )
    names = [KEY, KEY.swapcase(), "Zq9Wm3Xy" + "q" * (len(KEY) - 8)]
    answers = []
    for name in names:
        answer = await _raw_exchange(
            gw.base_url, _post("/v1/tts/stream", {"text": "hello", name: 1})
        )
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert answer.count(name.encode()) == 2  # in "param" and in the message
        answers.append(_without_timings(answer).replace(name.encode(), b"NAME"))
    assert answers[0] == answers[1] == answers[2]
    assert b'"param": "NAME"' in answers[0]


async def test_the_gateways_own_words_stay_whole_whatever_its_upstream_key(
    nursery: trio.Nursery,
) -> None:
    # Issue 30, 5: a key starting "UpstreamKey" turned "upstream_error" into
    # "<upstream key>_error", breaking callers that switch on the code.
    broken = await start_worker(
        nursery, RecordingEngine(defaults={"fail_status": 500}), api_keys=(KEY,)
    )
    gw = await start_gateway(
        nursery, [broken.base_url], hedge_ttfb_ms=None, upstream_api_key=KEY
    )
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "upstream_error",
        "message": "upstream answered 500 internal",
    }
    busy = await start_worker(
        nursery,
        RecordingEngine(defaults={"fail_status": 429, "retry_after_s": 1}),
        api_keys=(KEY,),
    )
    gw = await start_gateway(
        nursery, [busy.base_url], hedge_ttfb_ms=None, upstream_api_key=KEY
    )
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 429
    assert response.json()["error"] == {
        "code": "overloaded",
        "message": "every upstream is busy or unavailable; last: 429 overloaded",
    }


async def test_a_workers_metrics_frame_is_rebuilt_from_a_whitelist(
    nursery: trio.Nursery,
) -> None:
    # Issue 30, 2: extra fields in a worker's metrics frame reached the caller.
    frames = [
        {"type": "metrics", "queue_depth": 1, "echo": f"Bearer {KEY}"},
        {"type": "chunk", "seq": 0, "audio": "AQACAA=="},
        {
            "type": "metrics",
            "finish_reason": "length",
            "truncated": True,
            "tokens": 70,
            "note": f"Authorization: Bearer {KEY}",
            KEY: 1,
        },
        {"type": "metrics", "voice": f"<b>{KEY}</b>", "frames": -1, "dropped_tokens": 1.5},
        {"type": "eos", "chunks": 1, "samples": 2},
    ]
    url = await start_scripted_worker(nursery, ndjson_answer(frames))
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None, upstream_api_key=KEY)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 200
    assert KEY.lower() not in response.text.lower() and "<b>" not in response.text
    got = parse_frames(response.content)
    assert audio_of(got) == [_PCM] and got[-1]["type"] == "eos"
    # The chunk line is the worker's, byte for byte; every metrics line is ours.
    assert encode_chunk(0, _PCM) in response.content
    metrics = [f for f in got if f["type"] == "metrics"]
    assert set().union(*metrics) <= {
        "type", "queue_depth", "inflight", "capacity", "ttfb_ms", "rtf", "audio_s",
        "finish_reason", "truncated", "tokens",
    }  # fmt: skip
    outcome = {k: v for f in metrics for k, v in f.items()}
    assert (outcome["finish_reason"], outcome["truncated"], outcome["tokens"]) == (
        "length",
        True,
        70,
    )


async def test_in_band_errors_carry_the_gateways_words_only(nursery: trio.Nursery) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n"
        + encode_chunk(0, _PCM)
        + json.dumps(
            {"type": "error", "code": "engine_error", "message": f"Bearer {KEY}", "x": KEY}
        ).encode()
        + b"\n"
    )
    url = await start_scripted_worker(nursery, answer)
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None, upstream_api_key=KEY)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 200
    last = parse_frames(response.content)[-1]
    assert last == {
        "type": "error",
        "code": "engine_error",
        "message": "the upstream worker ended the stream with engine_error",
    }
    # The OpenAI shape is built from the same frames.
    received = b""
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "POST",
            gw.base_url + "/v1/audio/speech",
            json={"model": "tts-1", "input": "x", "response_format": "pcm"},
        ) as speech,
    ):
        assert speech.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # cut short: the audio is not whole
            async for data in speech.aiter_raw():
                received += data
    assert KEY.lower().encode() not in received.lower() and b"Bearer" not in received


HOSTILE_SYSTEM = {
    "api": "v1",
    "engine": f"Bearer {KEY}",
    "voices": [
        "tara",
        f"Bearer {KEY}",
        "<script>alert(1)</script>",
        "v" * 65,
        7,
        None,
        {"name": "x"},
        "leo",
        "tara",
        "長樂",  # a real voice name in another script is a name
    ],
    "capacity": True,
    "queue_depth": -3,
    "inflight": "9",
    "draining": "yes",
}


async def test_system_republishes_only_checked_fields_of_a_worker(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orpheus_trio.gateway")
    body = json.dumps(HOSTILE_SYSTEM).encode()
    system = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )
    url = await start_scripted_worker(nursery, b"", system_answer=system)
    gw = await start_gateway(nursery, [url], upstream_api_key=KEY)
    async with httpx.AsyncClient() as http:
        answer = await http.get(gw.base_url + "/v1/system")
    assert KEY.lower() not in answer.text.lower() and "<script" not in answer.text
    info = answer.json()
    assert info["voices"] == ["tara", "leo", "長樂"]
    (upstream,) = info["upstreams"]
    assert upstream["engine"] is None and upstream["voices"] == ["tara", "leo", "長樂"]
    assert upstream["capacity"] is None and upstream["queue_depth"] is None
    assert upstream["inflight"] is None and upstream["draining"] is False
    # One field name per fact: the worker's own count is the contract's "inflight".
    assert "in_flight" not in upstream and upstream["open_attempts"] == 0
    # The drop is logged once, without the values (they may be anything).
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [f"upstream {url}: dropped 7 voice or engine names that are not names "
                       "(docs/gateway.md)"]  # fmt: skip


async def test_service_endpoints_show_error_categories_never_upstream_text(
    nursery: trio.Nursery,
) -> None:
    leaky = await start_scripted_worker(
        nursery, b"", system_answer=error_answer(500, f"Bearer {KEY}")
    )
    down = closed_port_url()
    not_json = await start_scripted_worker(
        nursery,
        b"",
        system_answer=b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close"
        + b"\r\n\r\n"
        + KEY[:9].encode(),
    )
    gw = await start_gateway(
        nursery, [leaky, down, not_json], upstream_api_key=KEY, api_keys=("app-key",)
    )
    async with httpx.AsyncClient() as http:
        system = await http.get(gw.base_url + "/v1/system")  # no key needed: see docs
        metrics = await http.get(gw.base_url + "/metrics")
    assert system.status_code == metrics.status_code == 200
    errors = {u["url"]: u["error"] for u in system.json()["upstreams"]}
    assert errors == {leaky: "bad_status", down: "connect_failed", not_json: "bad_body"}
    for text in (system.text, metrics.text):
        assert KEY[-12:].lower() not in text.lower()
        for leak in ("Errno", "refused", "ConnectError", "HTTPStatusError", "Expecting"):
            assert leak not in text
    # The details are the operator's, in the gateway's own start-up report.
    report = "\n".join(gw.gateway.first_poll_report())
    assert f"upstream {down}: NOT reachable (connect_failed: ConnectError" in report
    assert KEY[-12:] not in report


async def test_protected_service_endpoints_need_a_key_and_urls_never_hold_credentials(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(
        nursery, [worker.base_url], api_keys=("app-key",), protect_service_endpoints=True
    )
    async with httpx.AsyncClient() as http:
        for path in ("/v1/system", "/metrics"):
            assert (await http.get(gw.base_url + path)).status_code == 401
            answer = await http.get(gw.base_url + path, headers={"X-API-Key": "app-key"})
            assert answer.status_code == 200
    # An upstream URL with credentials is refused outright (and not echoed), so
    # none can show in /v1/system or in the metrics' labels.
    with pytest.raises(ValueError, match="without credentials") as refused:
        Gateway([f"http://user:{KEY}@127.0.0.1:9"], ServerConfig())
    assert KEY not in str(refused.value)


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("tara", True),
        ("en-US.tara_2", True),
        ("長樂", True),
        ("v" * 64, True),
        ("v" * 65, False),
        ("", False),
        ("-tara", False),
        ("Bearer abc", False),
        ("<b>", False),
        ("tara\n", False),
        ("http://x", False),
        ("a:b", False),
        (7, False),
        (None, False),
    ],
)
def test_the_name_grammar(value: Any, kept: bool) -> None:
    assert (checked_name(value) is not None) is kept


async def test_the_workers_words_go_to_the_gateways_log_without_the_key(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orpheus_trio.gateway")
    body = json.dumps(
        {"error": {"code": "invalid_param", "message": f"no such knob; got Bearer {KEY}"}}
    ).encode()
    answer = (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )
    url = await start_scripted_worker(nursery, answer)
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None, upstream_api_key=KEY)
    response = await post_tts(
        gw.base_url, {"text": "x"}, **{"X-Request-Id": "logged-1"}
    )
    assert response.status_code == 400 and "no such knob" not in response.text
    (line,) = [
        r.getMessage() for r in caplog.records if "upstream failure" in r.getMessage()
    ]
    assert line.startswith("request logged-1: upstream failure: HTTPStatusError: 400")
    assert "no such knob; got Bearer" in line and KEY.lower() not in line.lower()
