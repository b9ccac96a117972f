"""The gateway as a v1 service: statuses, ids, deadlines, keys, /v1/system, /metrics, hints."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pybase64
import pytest
import trio
import trustme
from _support_gateway import (
    SYSTEM_ANSWER,
    RecordingEngine,
    engine_of,
    error_answer,
    ndjson_answer,
    post_tts,
    read_request_head,
    start_gateway,
    start_scripted_worker,
    start_worker,
    wait_until,
)
from _support_server import audio_of, parse_frames
from test_client_e2e import closed_port_url

from orpheus_trio import Breaker, OrpheusTTS, Timeouts
from orpheus_trio.server.engines.synthetic import expected_pcm, expected_stream


async def test_request_id_passes_through_and_each_attempt_names_its_parent(
    nursery: trio.Nursery,
) -> None:
    failing = await start_worker(
        nursery, RecordingEngine(defaults={"fail_status": 502})
    )
    healthy = await start_worker(nursery)
    gw = await start_gateway(
        nursery, [failing.base_url, healthy.base_url], hedge_ttfb_ms=None
    )
    ids = [f"caller-{n}" for n in range(4)]
    for request_id in ids:
        response = await post_tts(
            gw.base_url, {"text": "hi", "chunks": 1}, **{"X-Request-Id": request_id}
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == request_id
    upstream_ids = [rid for rid, _ in engine_of(failing).seen + engine_of(healthy).seen]
    for request_id in ids:
        mine = sorted(rid for rid in upstream_ids if rid and rid.startswith(request_id))
        assert mine[0] == f"{request_id}.1"
        assert mine == [f"{request_id}.{n}" for n in range(1, len(mine) + 1)]
    assert len(upstream_ids) > len(
        ids
    )  # the failing worker was tried, then failed over
    # Without an id the gateway makes one up and still names the attempts after it.
    response = await post_tts(gw.base_url, {"text": "hi", "chunks": 1})
    made_up = response.headers["x-request-id"]
    assert engine_of(healthy).seen[-1][0] == f"{made_up}.1" or any(
        rid == f"{made_up}.2" for rid, _ in engine_of(healthy).seen
    )


async def test_engine_params_and_remaining_timeout_pass_through(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(
        nursery, [worker.base_url], hedge_ttfb_ms=None, max_concurrency=1
    )
    body = {
        "text": "params",
        "voice": "zoe",
        "chunks": 2,
        "seed": 9,
        "temperature": 0.5,
    }
    async with trio.open_nursery() as first:
        # Occupies the gateway's one slot for 0.5 s: the request waits in its queue.
        first.start_soon(post_tts, gw.base_url, {"text": "first", "ttfb_ms": 500})
        await wait_until(lambda: gw.app.admission.running == 1)
        response = await post_tts(gw.base_url, {**body, "timeout_s": 7})
    assert response.status_code == 200
    params = {"chunks": 2, "seed": 9}
    assert audio_of(parse_frames(response.content)) == [
        expected_pcm("params", "zoe", seq, params) for seq in range(2)
    ]
    _, seen = engine_of(worker).seen[-1]
    assert {k: seen[k] for k in ("chunks", "seed", "temperature")} == {
        "chunks": 2,
        "seed": 9,
        "temperature": 0.5,
    }
    assert 6.0 < seen["timeout_s"] < 6.6  # what was left of the caller's 7 s

    # The gateway's own deadline ends a stalled stream with deadline_exceeded.
    response = await post_tts(
        gw.base_url,
        {
            "text": "stall",
            "chunks": 3,
            "stall_s": 5,
            "stall_after": 1,
            "timeout_s": 0.4,
        },
    )
    frames = parse_frames(response.content)
    assert len(audio_of(frames)) == 1
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "deadline_exceeded"
    await wait_until(lambda: worker.engine.requests_cancelled == 1)


async def test_upstream_4xx_passes_through_with_its_code_and_param(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url])
    response = await post_tts(gw.base_url, {"text": "x", "bogus_knob": 1})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_param"
    assert error["param"] == "bogus_knob"
    assert error["message"].startswith("bogus_knob: refused by the upstream worker")
    response = await post_tts(gw.base_url, {"text": "x", "voice": "nobody"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_param", "voice")
    # The gateway's own words: its checked voice list, then the aliases its workers take.
    voices, _, aliases = error["message"].partition("; aliases: ")
    assert voices == "voice: no upstream worker offers this voice; voices: " + ", ".join(
        worker.engine.voices()
    )
    assert aliases.startswith("alloy (tara), ") and "nobody" not in error["message"]
    # The gateway's own limits are the server's: checked before anything goes upstream.
    started = worker.engine.requests_started
    response = await post_tts(gw.base_url, {"text": "y" * 9000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "text_too_long"
    for reserved in ("request_id", "endpoints"):  # the client's, not the engine's
        response = await post_tts(gw.base_url, {"text": "x", reserved: ["mine"]})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == reserved
    assert worker.engine.requests_started == started
    # A 400 says nothing bad about the worker: its breaker stays closed.
    assert gw.gateway.engine.client.endpoints()[0].failures == 0


async def test_all_workers_busy_is_429_with_retry_after(nursery: trio.Nursery) -> None:
    busy = {"fail_status": 429, "retry_after_s": 3}
    workers = [
        await start_worker(nursery, RecordingEngine(defaults=busy)) for _ in range(2)
    ]
    gw = await start_gateway(nursery, [w.base_url for w in workers], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "overloaded"
    assert response.headers["retry-after"] == "3"
    # Failed over to the other worker, then tried again (max_attempts = 3).
    assert [w.engine.requests_started >= 1 for w in workers] == [True, True]
    assert sum(w.engine.requests_started for w in workers) == 3


async def test_no_reachable_worker_is_503_unavailable(nursery: trio.Nursery) -> None:
    gw = await start_gateway(nursery, [closed_port_url(), closed_port_url()])
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    async with httpx.AsyncClient() as client:
        system = (await client.get(gw.base_url + "/v1/system")).json()
    assert system["healthy_upstreams"] == 0 and system["voices"] == []


async def test_broken_worker_before_audio_is_502_and_after_audio_an_error_frame(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x", "chunks": 3, "cut_after": 0})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    for fault, code in (
        ({"cut_after": 2}, "engine_error"),
        ({"error_after": 2, "error_code": "engine_error"}, "engine_error"),
    ):
        response = await post_tts(gw.base_url, {"text": "x", "chunks": 5, **fault})
        assert response.status_code == 200
        frames = parse_frames(response.content)
        assert audio_of(frames) == [expected_pcm("x", None, s, {}) for s in range(2)]
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == code


async def test_app_keys_and_worker_key_are_separate_and_never_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await start_worker(
        nursery, api_keys=("worker-secret",), protect_service_endpoints=True
    )
    gw = await start_gateway(
        nursery,
        [worker.base_url],
        upstream_api_key="worker-secret",
        api_keys=("app-secret",),
    )
    caplog.set_level(logging.DEBUG)
    ok = await post_tts(
        gw.base_url, {"text": "x", "chunks": 1}, Authorization="Bearer app-secret"
    )
    assert ok.status_code == 200
    assert audio_of(parse_frames(ok.content)) == [expected_pcm("x", None, 0, {})]
    wrong = await post_tts(
        gw.base_url, {"text": "x"}, Authorization="Bearer worker-secret"
    )
    assert wrong.status_code == 401
    async with httpx.AsyncClient() as client:
        system = await client.get(gw.base_url + "/v1/system")
    assert system.json()["healthy_upstreams"] == 1  # the poll used the worker key
    assert "worker-secret" not in system.text
    assert "worker-secret" not in repr(gw.gateway.engine.client.__dict__)
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "app-secret" not in logged and "worker-secret" not in logged
    # The gateway's access line names the upstream and attempt that served the request.
    gateway_lines = [
        r.request
        for r in caplog.records
        if getattr(r, "request", {}).get("engine") == "gateway"
        and r.request["path"] == "/v1/tts/stream"
        and r.request["status"] == 200
    ]
    assert len(gateway_lines) == 1
    line = gateway_lines[0]
    assert line["upstream"] == worker.base_url and line["attempts"] == 1
    assert line["upstream_request_id"] == line["request_id"] + ".1"


async def test_caller_leaving_before_any_audio_cancels_the_upstream_attempt(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url], hedge_ttfb_ms=None)
    with trio.move_on_after(0.3):  # the caller gives up long before the first audio
        await post_tts(gw.base_url, {"text": "slow", "ttfb_ms": 10_000})
    left_at = trio.current_time()
    await wait_until(lambda: worker.engine.requests_cancelled == 1)
    assert trio.current_time() - left_at < 0.5
    await wait_until(lambda: not worker.app.admission.running)
    assert gw.gateway.engine.client.endpoints()[0].in_flight == 0


async def test_system_reports_the_gateway_and_a_summary_of_its_upstreams(
    nursery: trio.Nursery,
) -> None:
    a = await start_worker(nursery, RecordingEngine(offered=["tara", "leo"]))
    b = await start_worker(nursery, RecordingEngine(offered=["leo", "zoe"]))
    c = await start_worker(nursery, RecordingEngine(offered=["mia"]))
    gw = await start_gateway(nursery, [a.base_url, b.base_url, c.base_url])
    async with httpx.AsyncClient() as http:
        system = (await http.get(gw.base_url + "/v1/system")).json()
        assert system["api"] == "v1"
        assert system["server"] == "orpheus-trio-gateway"
        assert system["engine"] == "gateway" and system["gateway"] is True
        # In the workers' order: the first worker's default voice comes first.
        assert system["voices"] == ["tara", "leo", "zoe", "mia"]
        assert [u["url"] for u in system["upstreams"]] == [
            a.base_url,
            b.base_url,
            c.base_url,
        ]
        first = system["upstreams"][0]
        assert first["healthy"] and first["engine"] == "synthetic"
        assert first["voices"] == ["tara", "leo"]
        assert first["breaker_state"] == "closed" and first["capacity"] == 4
        c.app.start_draining()  # a draining worker's voices are no longer offered
        await wait_until(lambda: gw.gateway.engine.voices() == ["tara", "leo", "zoe"])
        system = (await http.get(gw.base_url + "/v1/system")).json()
        assert system["healthy_upstreams"] == 2
        assert system["upstream_capacity"] == 8  # two healthy workers of 4
        assert system["upstreams"][2]["draining"] is True


async def test_metrics_add_per_upstream_series(nursery: trio.Nursery) -> None:
    failing = await start_worker(
        nursery, RecordingEngine(defaults={"fail_status": 500})
    )
    healthy = await start_worker(nursery)
    gw = await start_gateway(
        nursery,
        [failing.base_url, healthy.base_url],
        hedge_ttfb_ms=None,
        client={"breaker": Breaker(failures=1, base_cooldown_s=60)},
    )
    for _ in range(3):
        assert (
            await post_tts(gw.base_url, {"text": "m", "chunks": 1})
        ).status_code == 200
    async with httpx.AsyncClient() as http:
        text = (await http.get(gw.base_url + "/metrics")).text

    def value(series: str) -> float:
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{series} not in /metrics")

    f, h = failing.base_url, healthy.base_url
    assert value(f'orpheus_upstream_failures_total{{upstream="{f}"}}') == 1
    assert value(f'orpheus_upstream_attempts_total{{upstream="{f}"}}') == 1
    assert value(f'orpheus_upstream_wins_total{{upstream="{h}"}}') == 3
    assert value(f'orpheus_upstream_failovers_total{{upstream="{h}"}}') == 1
    assert value(f'orpheus_upstream_hedges_total{{upstream="{h}"}}') == 0
    assert value(f'orpheus_upstream_breaker_state{{state="open",upstream="{f}"}}') == 1
    assert (
        value(f'orpheus_upstream_breaker_state{{state="closed",upstream="{h}"}}') == 1
    )
    assert value(f'orpheus_upstream_healthy{{upstream="{f}"}}') == 0
    assert value(f'orpheus_upstream_healthy{{upstream="{h}"}}') == 1
    assert (
        value(f'orpheus_upstream_time_to_first_audio_seconds_count{{upstream="{h}"}}')
        == 3
    )
    assert (
        value('orpheus_requests_total{status="200"}') == 3
    )  # the server's own series too


async def test_queue_hints_flow_through_so_a_client_in_front_routes_well(
    nursery: trio.Nursery,
) -> None:
    calm = await start_worker(nursery)
    # A worker whose engine reports a deep queue of its own (as a batching LLM server
    # may), deep enough that noise in the measured latencies on a busy box (the score
    # is latency x load) cannot outweigh it.
    swamped = await start_worker(nursery, RecordingEngine(hints={"queue_depth": 60}))
    gw_calm = await start_gateway(nursery, [calm.base_url], hedge_ttfb_ms=None)
    gw_swamped = await start_gateway(nursery, [swamped.base_url], hedge_ttfb_ms=None)

    idle = await post_tts(gw_calm.base_url, {"text": "x", "chunks": 1})
    assert idle.headers["x-queue-depth"] == "1"  # just its own attempt upstream
    busy = await post_tts(gw_swamped.base_url, {"text": "x", "chunks": 1})
    # The worker's hint (60, fading with age) plus the gateway's own open attempt there.
    assert int(busy.headers["x-queue-depth"]) >= 59
    opening = parse_frames(busy.content)[0]
    assert opening["type"] == "metrics" and opening["queue_depth"] >= 59

    # A client in front of both gateways sends its traffic to the calm one.
    async with OrpheusTTS(
        [gw_calm.base_url, gw_swamped.base_url],
        hedge_ttfb_ms=None,
        rng=random.Random(1),
    ) as tts:
        for n in range(8):
            assert await tts.synthesize(f"route {n}", chunks=1) == expected_pcm(
                f"route {n}", None, 0, {}
            )
        wins = {s.url: s.wins for s in tts.endpoints()}
    # The swamped one only while it was cold (and, on a loaded box, maybe once more).
    assert wins[gw_swamped.base_url] <= 2
    assert wins[gw_calm.base_url] >= 6


async def test_draining_gateway_refuses_new_requests(nursery: trio.Nursery) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url])
    gw.drain.set()
    await gw.stopped.wait()  # idle: drains at once and stops
    assert gw.app.draining
    with pytest.raises(httpx.ConnectError):
        await post_tts(gw.base_url, {"text": "x"})


# -- sick upstreams: answers no healthy worker gives ---------------------------------

_PCM = b"\x01\x00\x02\x00\x03\x00\x04\x00"
_ONE_CHUNK = [
    {"type": "chunk", "seq": 0, "audio": pybase64.b64encode(_PCM).decode()},
    {"type": "eos", "chunks": 1, "samples": 4},
]


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("depth", ["inf", "nan", "-inf", "1e999"])
async def test_a_worker_with_a_non_finite_queue_hint_does_not_break_the_gateway(
    nursery: trio.Nursery, depth: str
) -> None:
    url = await start_scripted_worker(
        nursery, ndjson_answer(_ONE_CHUNK, **{"X-Queue-Depth": depth})
    )
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None)
    for _ in range(2):
        response = await post_tts(gw.base_url, {"text": "x"})
        assert response.status_code == 200
        frames = parse_frames(response.content)
        assert audio_of(frames) == [_PCM] and frames[-1]["type"] == "eos"
        assert int(response.headers["x-queue-depth"]) >= 0
        assert frames[0]["type"] == "metrics" and frames[0]["queue_depth"] >= 0
    async with httpx.AsyncClient() as http:
        system = await http.get(gw.base_url + "/v1/system")
        assert system.status_code == 200
        info = _strict_json(system.text)
        assert info["queue_depth"] >= 0
        assert (await http.get(gw.base_url + "/metrics")).status_code == 200


@pytest.mark.filterwarnings("error")  # the gateway passes a cut on; it does not warn itself
async def test_a_workers_outcome_metrics_reach_the_caller_but_not_its_load(
    nursery: trio.Nursery,
) -> None:
    # An orpheus worker says after the audio whether max_tokens cut it short;
    # behind a gateway the caller must still learn it. The worker's load and
    # timings are not the gateway's, so those are not passed on.
    frames = [
        {"type": "metrics", "queue_depth": 77, "inflight": 9},
        _ONE_CHUNK[0],
        {"type": "metrics", "finish_reason": "length", "truncated": True, "rtf": 99.0},
        _ONE_CHUNK[1],
    ]
    url = await start_scripted_worker(nursery, ndjson_answer(frames))
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 200
    got = parse_frames(response.content)
    assert audio_of(got) == [_PCM] and got[-1]["type"] == "eos"
    merged = {k: v for f in got if f["type"] == "metrics" for k, v in f.items()}
    assert (merged["finish_reason"], merged["truncated"]) == ("length", True)
    assert merged["queue_depth"] != 77 and merged["inflight"] != 9 and merged["rtf"] != 99.0


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("inf", None), ("nan", None), ("-3", None), ("2.5", "3")],
)
async def test_a_workers_retry_after_is_passed_on_only_when_sane(
    nursery: trio.Nursery, retry_after: str, expected: str | None
) -> None:
    url = await start_scripted_worker(
        nursery, error_answer(429, "overloaded", **{"Retry-After": retry_after})
    )
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "overloaded"
    assert response.headers.get("retry-after") == expected


async def test_a_worker_refusing_the_gateways_key_is_502_not_the_callers_401(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery, api_keys=("worker-secret",))
    gw = await start_gateway(
        nursery,
        [worker.base_url],
        upstream_api_key="wrong-worker-key",
        api_keys=("app-secret",),
    )
    response = await post_tts(
        gw.base_url, {"text": "x"}, Authorization="Bearer app-secret"
    )
    # The caller's key was right: a 401 would tell it otherwise.
    assert response.status_code == 502
    assert "www-authenticate" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert "401" in error["message"] and "unauthorized" in error["message"]
    assert "wrong-worker-key" not in response.text


async def test_a_worker_answering_404_is_502_not_passed_on(
    nursery: trio.Nursery,
) -> None:
    url = await start_scripted_worker(nursery, error_answer(404, "not_found"))
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


async def test_a_worker_trickling_its_system_answer_stalls_neither_start_nor_health(
    nursery: trio.Nursery,
) -> None:
    async def trickle(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: 100000\r\n\r\n"
                )
                while True:  # a byte now and then: no read ever times out
                    await stream.send_all(b" ")
                    await trio.sleep(0.05)

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, trickle, 0, host="127.0.0.1")
    )
    trickler = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    healthy = await start_worker(nursery)
    with trio.fail_after(2):
        gw = await start_gateway(
            nursery,
            [trickler, healthy.base_url],
            health_interval_s=0.05,
            health_timeout_s=0.3,
        )
    statuses = gw.gateway.engine.upstreams.statuses
    assert not statuses[trickler].reachable
    assert statuses[trickler].error == "timeout"  # a category in /v1/system
    assert statuses[trickler].detail is not None and "0.3" in statuses[trickler].detail
    assert statuses[healthy.base_url].reachable
    # The healthy worker's news still comes in while the trickler holds each poll.
    healthy.app.start_draining()
    await wait_until(lambda: statuses[healthy.base_url].draining, 2.0)


async def test_a_worker_with_a_huge_system_answer_is_marked_down(
    nursery: trio.Nursery,
) -> None:
    body = b" " * (2 << 20) + json.dumps(SYSTEM_ANSWER).encode()
    huge = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body
    url = await start_scripted_worker(nursery, b"", system_answer=huge)
    gw = await start_gateway(nursery, [url])
    status = gw.gateway.engine.upstreams.statuses[url]
    assert not status.reachable
    assert status.error == "bad_body"
    assert status.detail is not None and "too large" in status.detail


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_the_health_poll_uses_the_gateways_tls_settings(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    body = json.dumps(SYSTEM_ANSWER).encode()
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def handle(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, server_context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError):
            data = b""
            while piece := await stream.receive_some(65536):
                data += piece
                while b"\r\n\r\n" in data:
                    _, _, data = data.partition(b"\r\n\r\n")
                    await stream.send_all(answer)
        await trio.aclose_forcefully(stream)

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
    )
    url = f"https://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    gw = await start_gateway(nursery, [url], client={"ssl_context": trusting})
    status = gw.gateway.engine.upstreams.statuses[url]
    assert status.reachable, status.error
    assert status.voices == ("tara",)


async def test_the_health_poll_ignores_proxy_settings_so_the_key_goes_nowhere_else(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    received = bytearray()

    async def proxy(stream: trio.SocketStream) -> None:
        async with stream:
            received.extend(await stream.receive_some(65536))

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, proxy, 0, host="127.0.0.1")
    )
    proxy_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    worker = await start_worker(
        nursery, api_keys=("worker-secret",), protect_service_endpoints=True
    )
    gw = await start_gateway(
        nursery, [worker.base_url], upstream_api_key="worker-secret"
    )
    status = gw.gateway.engine.upstreams.statuses[worker.base_url]
    assert status.reachable, status.error  # polled directly, as requests go
    assert b"worker-secret" not in received and not received


async def _start_raw_worker(
    nursery: trio.Nursery, after_request: Callable[[trio.SocketStream], Awaitable[None]]
) -> str:
    """A worker that reads one request head, then does ``after_request``."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            if await read_request_head(stream) is not None:
                await after_request(stream)

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
    )
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_a_worker_that_never_answers_is_504_not_unreachable(
    nursery: trio.Nursery,
) -> None:
    async def never(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    url = await _start_raw_worker(nursery, never)
    gw = await start_gateway(
        nursery,
        [url],
        hedge_ttfb_ms=None,
        health_timeout_s=0.2,  # its /v1/system never answers either
        client={"timeouts": Timeouts(read_s=0.2)},
    )
    with trio.fail_after(5):
        response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert "could be reached" not in error["message"]


async def test_a_worker_resetting_the_connection_is_502_not_unreachable(
    nursery: trio.Nursery,
) -> None:
    async def reset(stream: trio.SocketStream) -> None:
        linger = struct.pack("ii", 1, 0)  # close with a RST, not a FIN
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)

    url = await _start_raw_worker(nursery, reset)
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert "could be reached" not in error["message"]


async def test_caller_leaving_during_a_hedged_race_cancels_every_attempt(
    nursery: trio.Nursery,
) -> None:
    slow = [
        await start_worker(nursery, RecordingEngine(defaults={"ttfb_ms": 10_000}))
        for _ in range(3)
    ]
    gw = await start_gateway(nursery, [w.base_url for w in slow], hedge_ttfb_ms=50)
    with trio.move_on_after(0.4):  # long enough for the first try and both hedges
        await post_tts(gw.base_url, {"text": "nobody answers"})
    assert [w.engine.requests_started for w in slow] == [1, 1, 1]
    await wait_until(lambda: all(w.engine.requests_cancelled == 1 for w in slow))
    await wait_until(lambda: all(not w.app.admission.running for w in slow))
    await wait_until(lambda: not gw.app.admission.running)
    assert all(s.in_flight == 0 for s in gw.gateway.engine.client.endpoints())


async def test_a_voice_only_some_workers_offer_is_served_by_them(
    nursery: trio.Nursery,
) -> None:
    plain = await start_worker(nursery, RecordingEngine(offered=["tara"]))
    special = await start_worker(nursery, RecordingEngine(offered=["tara", "mia"]))
    gw = await start_gateway(
        nursery, [plain.base_url, special.base_url], hedge_ttfb_ms=None
    )
    async with httpx.AsyncClient() as http:
        system = (await http.get(gw.base_url + "/v1/system")).json()
    assert system["voices"] == ["tara", "mia"]  # offered: it must work every time
    for n in range(6):
        text = f"mia speaks {n}"
        response = await post_tts(gw.base_url, {"text": text, "voice": "mia"})
        assert response.status_code == 200, response.text
        assert audio_of(parse_frames(response.content)) == expected_stream(
            text, "mia", {}
        )
    # A voice no worker offers is still the workers' 400.
    response = await post_tts(gw.base_url, {"text": "x", "voice": "nobody"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "voice"


async def test_one_worker_refusing_the_upstream_key_is_failed_over_and_broken(
    nursery: trio.Nursery,
) -> None:
    rotated = await start_worker(nursery, api_keys=("new-key",))
    current = await start_worker(nursery, api_keys=("worker-key",))
    gw = await start_gateway(
        nursery,
        [rotated.base_url, current.base_url],
        upstream_api_key="worker-key",
        hedge_ttfb_ms=None,
        client={"breaker": Breaker(failures=1, base_cooldown_s=60)},
    )
    for n in range(6):
        text = f"still served {n}"
        response = await post_tts(gw.base_url, {"text": text, "chunks": 2})
        assert response.status_code == 200, response.text
        assert audio_of(parse_frames(response.content)) == expected_stream(
            text, None, {"chunks": 2}
        )
    snaps = {s.url: s for s in gw.gateway.engine.client.endpoints()}
    # Its 401 counts against it: its breaker opens, so it stops costing attempts.
    assert snaps[rotated.base_url].failures == 1
    assert snaps[rotated.base_url].breaker_state == "open"
    assert snaps[current.base_url].wins == 6


async def test_a_longest_caller_id_still_names_the_upstream_attempts(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url], hedge_ttfb_ms=None)
    request_id = "r" * 127 + "z"  # the longest id a server keeps (128 characters)
    response = await post_tts(
        gw.base_url, {"text": "hi", "chunks": 1}, **{"X-Request-Id": request_id}
    )
    assert response.headers["x-request-id"] == request_id
    upstream_id = engine_of(worker).seen[-1][0]
    # Shortened so that the worker keeps it (and does not make one up): its
    # log line still leads back to the caller's request.
    assert upstream_id is not None and len(upstream_id) <= 128
    assert upstream_id == request_id[:126] + ".1"


async def test_a_caller_that_stops_reading_releases_its_slot_and_the_worker(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(
        nursery, [worker.base_url], hedge_ttfb_ms=None, write_stall_timeout_s=0.3
    )
    body = json.dumps({"text": "flood", "chunks": 400, "chunk_samples": 48_000})
    host, port = gw.base_url.removeprefix("http://").rsplit(":", 1)
    caller = await trio.open_tcp_stream(host, int(port))
    async with caller:  # sends the request, then never reads a byte
        await caller.send_all(
            b"POST /v1/tts/stream HTTP/1.1\r\nhost: gw\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body.encode())
        )
        await wait_until(lambda: worker.engine.requests_started == 1)
        await wait_until(lambda: worker.engine.requests_cancelled == 1, 5.0)
        await wait_until(lambda: not gw.app.admission.running, 2.0)
        await wait_until(lambda: not worker.app.admission.running, 2.0)
    assert gw.gateway.engine.client.endpoints()[0].in_flight == 0


@pytest.mark.parametrize("status", [301, 204, 403])
async def test_a_worker_answering_an_odd_status_is_failed_over(
    nursery: trio.Nursery, status: int
) -> None:
    odd = await start_scripted_worker(
        nursery, error_answer(status, "odd", location="http://elsewhere/")
    )
    healthy = await start_worker(nursery)
    gw = await start_gateway(
        nursery,
        [odd, healthy.base_url],
        hedge_ttfb_ms=None,
        client={"breaker": Breaker(failures=1, base_cooldown_s=60)},
    )
    for n in range(3):
        text = f"odd {n}"
        response = await post_tts(gw.base_url, {"text": text, "chunks": 1})
        assert response.status_code == 200, response.text
        assert audio_of(parse_frames(response.content)) == expected_stream(
            text, None, {"chunks": 1}
        )
    snaps = {s.url: s for s in gw.gateway.engine.client.endpoints()}
    assert snaps[odd].failures == 1 and snaps[odd].breaker_state == "open"


def _echoing(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        b"HTTP/1.1 %d Echo\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, len(body), body)
    )


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        # No worker message reaches the caller: the gateway writes its own words,
        # naming at most the status and a documented code.
        (_echoing(401, "unauthorized", "bad token 'worker-secret'"), "401 unauthorized"),
        (_echoing(400, "invalid_param", "bad token 'worker-secret'"), "(invalid_param)"),
        (
            ndjson_answer(
                [
                    _ONE_CHUNK[0],
                    {"type": "error", "code": "engine_error", "message": "worker-secret!"},
                ]
            ),
            "engine_error",
        ),
    ],
)
async def test_a_worker_echoing_the_upstream_key_does_not_pass_it_to_callers(
    nursery: trio.Nursery, answer: bytes, kept: str
) -> None:
    url = await start_scripted_worker(nursery, answer)
    gw = await start_gateway(
        nursery, [url], hedge_ttfb_ms=None, upstream_api_key="worker-secret"
    )
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code in (200, 400, 502)
    assert "worker-secret" not in response.text
    assert kept in response.text
    engine = gw.gateway.engine
    assert "worker-secret" not in repr((vars(engine), vars(engine.upstreams)))


async def test_health_polls_log_no_httpx_line_but_other_httpx_use_still_does(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url], health_interval_s=0.02)
    polled = gw.gateway.engine.upstreams.statuses[worker.base_url]
    await trio.sleep(0.3)  # about 15 polls
    assert gw.gateway.engine.upstreams.statuses[worker.base_url] is not polled
    assert not [r for r in caplog.records if "/v1/system" in r.getMessage()]
    async with httpx.AsyncClient() as http:  # outside the poller: httpx logs as usual
        await http.get(worker.base_url + "/v1/system")
    assert [r for r in caplog.records if "/v1/system" in r.getMessage()]
