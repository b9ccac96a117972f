"""End to end: a gateway in front of synthetic workers, every PCM byte checked."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import httpx
import pybase64
import pytest
import trio
from _support_gateway import (
    RecordingEngine,
    engine_of,
    post_tts,
    start_gateway,
    start_scripted_worker,
    start_worker,
    wait_until,
)
from _support_server import audio_of, parse_frames

from orpheus_trio import OrpheusTTS
from orpheus_trio.server.engines.synthetic import expected_pcm, expected_stream
from orpheus_trio.server.gateway.upstreams import UpstreamWatch

TEXTS = [f"Sentence number {n}, checked byte for byte." for n in range(12)]


async def test_slow_failing_and_healthy_workers_every_byte_arrives(
    nursery: trio.Nursery,
) -> None:
    slow = await start_worker(nursery, RecordingEngine(defaults={"ttfb_ms": 1500}))
    failing = await start_worker(
        nursery, RecordingEngine(defaults={"fail_status": 500, "fail_code": "internal"})
    )
    healthy = await start_worker(nursery)
    gw = await start_gateway(
        nursery,
        [slow.base_url, failing.base_url, healthy.base_url],
        hedge_ttfb_ms=100,
        max_concurrency=8,
    )
    params = {"chunk_samples": 960, "seed": 3}
    async with OrpheusTTS(gw.base_url, hedge_ttfb_ms=None) as tts:
        for text in TEXTS:
            with trio.fail_after(1.2):  # never waits for the slow worker
                async with tts.open_stream(text, "leah", **params) as audio:
                    chunks = [pcm async for pcm in audio]
            assert chunks == expected_stream(text, "leah", params)

    # Every answer came from the healthy worker; the others were tried and left.
    assert len(engine_of(healthy).seen) == len(TEXTS)
    assert engine_of(failing).seen, "the failing worker was never tried"
    assert slow.engine.requests_started >= 1
    await wait_until(
        lambda: slow.engine.requests_cancelled == slow.engine.requests_started
    )
    snaps = {s.url: s for s in gw.gateway.engine.client.endpoints()}
    assert snaps[healthy.base_url].wins == len(TEXTS)
    assert snaps[failing.base_url].failures >= 1
    assert snaps[slow.base_url].wins == snaps[failing.base_url].wins == 0
    assert snaps[healthy.base_url].hedges + snaps[healthy.base_url].failovers >= 1
    await wait_until(lambda: gw.app.admission.running == 0)


async def test_hedge_through_the_gateway_wins_on_the_fast_worker(
    nursery: trio.Nursery,
) -> None:
    slow = await start_worker(nursery, RecordingEngine(defaults={"ttfb_ms": 3000}))
    fast = await start_worker(nursery)
    gw = await start_gateway(nursery, [slow.base_url, fast.base_url], hedge_ttfb_ms=80)
    for n in range(4):
        text = f"hedge me {n}"
        started = trio.current_time()
        response = await post_tts(gw.base_url, {"text": text, "chunks": 3})
        assert trio.current_time() - started < 1.0
        assert response.status_code == 200
        assert audio_of(parse_frames(response.content)) == [
            expected_pcm(text, None, seq, {}) for seq in range(3)
        ]
    # The slow worker was tried (cold endpoints are tried first), lost the race
    # and saw its attempt cancelled; the winner was a hedge on the fast worker.
    assert slow.engine.requests_started >= 1
    await wait_until(
        lambda: slow.engine.requests_cancelled == slow.engine.requests_started
    )
    fast_snap = next(
        s for s in gw.gateway.engine.client.endpoints() if s.url == fast.base_url
    )
    assert fast_snap.hedges >= 1
    assert any(
        rid is not None and rid.endswith(".2") for rid, _ in engine_of(fast).seen
    )


async def test_worker_killed_mid_stream_ends_with_error_frame_then_others_serve(
    nursery: trio.Nursery,
) -> None:
    first = await start_worker(nursery)
    second = await start_worker(nursery)
    gw = await start_gateway(
        nursery, [first.base_url, second.base_url], hedge_ttfb_ms=None
    )
    params = {"chunks": 40, "rtf": 1.0, "chunk_samples": 1200}  # 50 ms per chunk
    text = "a long answer that will be cut"
    received: list[bytes] = []
    frames: list[dict[str, Any]] = []
    async with httpx.AsyncClient() as http:
        request = http.build_request(
            "POST",
            gw.base_url + "/v1/tts/stream",
            content=json.dumps({"text": text, **params}).encode(),
            headers={"Content-Type": "application/json"},
        )
        response = await http.send(request, stream=True)
        assert response.status_code == 200
        lines = response.aiter_lines()
        async for line in lines:
            frame = json.loads(line)
            frames.append(frame)
            if frame["type"] == "chunk" and frame["seq"] == 2:
                break
        serving = first if first.engine.requests_started else second
        await serving.kill()
        async for line in lines:
            if line.strip():
                frames.append(json.loads(line))
        await response.aclose()
        received = audio_of(frames)
        assert frames[-1]["type"] == "error"
        assert frames[-1]["code"] == "engine_error"
        assert 3 <= len(received) < 40
        assert received == [
            expected_pcm(text, None, seq, params) for seq in range(len(received))
        ]

        # The dead worker refuses connections now: requests fail over to the other.
        survivor = second if serving is first else first
        for n in range(3):
            text = f"after the crash {n}"
            response = await post_tts(gw.base_url, {"text": text, "chunks": 2})
            assert response.status_code == 200
            assert audio_of(parse_frames(response.content)) == [
                expected_pcm(text, None, seq, {}) for seq in range(2)
            ]
        assert survivor.engine.requests_started >= 3

        # Its next poll marks it unreachable: /v1/system drops it from the healthy set.
        with trio.fail_after(3):
            while True:
                system = (await http.get(gw.base_url + "/v1/system")).json()
                if system["healthy_upstreams"] == 1:
                    break
                await trio.sleep(0.05)
        dead = next(u for u in system["upstreams"] if u["url"] == serving.base_url)
        assert dead["reachable"] is False and dead["healthy"] is False
        assert dead["error"]


async def test_caller_disconnect_cancels_the_worker_at_once(
    nursery: trio.Nursery,
) -> None:
    worker = await start_worker(nursery)
    gw = await start_gateway(nursery, [worker.base_url], hedge_ttfb_ms=None)
    params = {"chunks": 200, "rtf": 1.0, "chunk_samples": 2400}  # 20 s of paced audio
    async with (
        OrpheusTTS(gw.base_url, hedge_ttfb_ms=None) as tts,
        tts.open_stream("leave early", **params) as audio,
    ):
        first = await audio.__anext__()
        assert first == expected_pcm("leave early", None, 0, params)
        assert worker.app.admission.running == 1
        left_at = trio.current_time()
    await wait_until(lambda: worker.engine.requests_cancelled == 1, 1.0)
    assert trio.current_time() - left_at < 0.5
    await wait_until(
        lambda: not worker.app.admission.running and not gw.app.admission.running
    )
    assert b"orpheus_inflight 0.0" in worker.app.metrics.render()
    assert gw.gateway.engine.client.endpoints()[0].in_flight == 0


async def test_a_worker_answering_unparseable_system_json_is_marked_down_not_fatal(
    nursery: trio.Nursery,
) -> None:
    # JSON nested past Python's recursion limit: the parser raises RecursionError.
    body = b"[" * 100_000
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some()
            await stream.send_all(answer)

    listeners = await nursery.start(
        partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    watch = UpstreamWatch([f"http://127.0.0.1:{port}"])
    try:
        await watch.poll()
    finally:
        await watch.aclose()
    status = watch.statuses[f"http://127.0.0.1:{port}"]
    assert not status.reachable
    assert status.error == "bad_body"
    assert status.detail is not None and "RecursionError" in status.detail


# Each fault on one worker, the other healthy: before audio the caller gets the
# healthy worker's whole stream; after audio, the faulty worker's first chunks
# and an error frame (never the healthy worker's audio after them).
FAULTS_BEFORE_AUDIO = [
    {"fail_status": 500},
    {"fail_status": 503},
    {"fail_status": 429, "retry_after_s": 1},
    {"cut_after": 0},
    {"malformed_after": 0},
    {"error_after": 0, "error_code": "engine_error"},
    {"error_after": 0, "error_code": "internal"},
]
FAULTS_AFTER_AUDIO = [
    ({"cut_after": 2}, "engine_error"),
    ({"malformed_after": 2}, "engine_error"),
    ({"error_after": 2, "error_code": "engine_error"}, "engine_error"),
    ({"error_after": 2, "error_code": "internal"}, "internal"),
    ({"stall_after": 2, "stall_s": 10}, "deadline_exceeded"),  # caller's timeout_s
]


@pytest.mark.parametrize("fault", FAULTS_BEFORE_AUDIO)
async def test_a_fault_before_audio_fails_over_to_the_healthy_worker(
    nursery: trio.Nursery, fault: dict[str, Any]
) -> None:
    faulty = await start_worker(nursery, RecordingEngine(defaults=fault))
    healthy = await start_worker(nursery)
    gw = await start_gateway(
        nursery, [faulty.base_url, healthy.base_url], hedge_ttfb_ms=None
    )
    for n in range(4):
        text = f"fail over {n}"
        with trio.fail_after(5):
            response = await post_tts(gw.base_url, {"text": text, "chunks": 3})
        assert response.status_code == 200
        frames = parse_frames(response.content)
        assert frames[-1]["type"] == "eos"
        assert audio_of(frames) == expected_stream(text, None, {"chunks": 3})
    assert faulty.engine.requests_started >= 1
    await wait_until(lambda: gw.app.admission.running == 0)
    assert all(s.in_flight == 0 for s in gw.gateway.engine.client.endpoints())


@pytest.mark.parametrize(("fault", "code"), FAULTS_AFTER_AUDIO)
async def test_a_fault_after_audio_is_an_error_frame_with_no_mixed_audio(
    nursery: trio.Nursery, fault: dict[str, Any], code: str
) -> None:
    faulty = await start_worker(nursery, RecordingEngine(defaults=fault))
    healthy = await start_worker(nursery)
    gw = await start_gateway(
        nursery, [faulty.base_url, healthy.base_url], hedge_ttfb_ms=None
    )
    text = "cut me short"
    seen_faulty = 0
    for _ in range(6):  # routing decides which worker serves: try until the faulty one
        with trio.fail_after(5):
            body = {"text": text, "chunks": 5, "timeout_s": 0.6}
            response = await post_tts(gw.base_url, body)
        assert response.status_code == 200
        frames = parse_frames(response.content)
        if faulty.engine.requests_started == seen_faulty:
            assert frames[-1]["type"] == "eos"
            assert audio_of(frames) == expected_stream(text, None, {"chunks": 5})
            continue
        seen_faulty = faulty.engine.requests_started
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == code
        assert audio_of(frames) == [expected_pcm(text, None, s, {}) for s in range(2)]
        assert [f["seq"] for f in frames if f["type"] == "chunk"] == [0, 1]
    assert seen_faulty >= 1, "the faulty worker never served"
    await wait_until(lambda: gw.app.admission.running == 0)
    await wait_until(
        lambda: all(s.in_flight == 0 for s in gw.gateway.engine.client.endpoints())
    )


def _plain_answer(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )


async def test_the_winners_chunk_lines_are_relayed_byte_for_byte(
    nursery: trio.Nursery,
) -> None:
    """The gateway writes the worker's checked chunk lines on as they came: a
    line whose last base64 digit has non-zero spare bits (valid, decoding to the
    same PCM) comes out unchanged, where decoding and encoding again would
    write the canonical digit."""
    lines = [
        b'{"type":"chunk","seq":0,"audio":"AAD="}\n',  # canonical: "AAA="
        b'{"type":"chunk","seq":1,"audio":"%s"}\n' % pybase64.b64encode(bytes(range(256)) * 8),
    ]
    url = await start_scripted_worker(
        nursery, _plain_answer(b"".join(lines) + b'{"type":"eos","chunks":2,"samples":1025}\n')
    )
    gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None)
    response = await post_tts(gw.base_url, {"text": "x"})
    assert response.status_code == 200
    for line in lines:
        assert line in response.content
    frames = parse_frames(response.content)
    assert frames[-1] == {"type": "eos", "chunks": 2, "samples": 1025}
    assert audio_of(frames) == [b"\x00\x00", bytes(range(256)) * 8]


async def test_a_bad_line_after_relayed_audio_is_never_forwarded(
    nursery: trio.Nursery,
) -> None:
    good = b'{"type":"chunk","seq":0,"audio":"AAAAAA=="}\n'
    for bad in (
        b'{"type":"chunk","seq":2,"audio":"AAAAAA=="}\n',  # seq skips one
        b'{"type":"chunk","seq":1,"audio":"AAA"}\n',  # not strict base64
        b'{"type":"eos","chunks":1,"samples":5}\n',  # totals do not match
        b'{"type":"chunk","seq":1,"audio":"AAAA"}\n',  # an odd byte count
    ):
        url = await start_scripted_worker(nursery, _plain_answer(good + bad))
        gw = await start_gateway(nursery, [url], hedge_ttfb_ms=None)
        response = await post_tts(gw.base_url, {"text": "x"})
        frames = parse_frames(response.content)
        assert [f["type"] for f in frames] == ["metrics", "chunk", "error"], bad
        assert bad not in response.content
        assert audio_of(frames) == [bytes(4)]
