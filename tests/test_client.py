"""OrpheusTTS API surface with a scripted fake transport (no sockets)."""

from __future__ import annotations

import math
import random
import ssl
import warnings
from contextlib import aclosing

import httpx
import pytest
import trio
import trio.testing
from _support_client import (
    FakeTransport,
    Script,
    expected_audio,
    in_order,
    metrics,
    speech,
    status,
)

from orpheus_trio import (
    EndpointSnapshot,
    HTTPStatusError,
    OrpheusTTS,
    Timeouts,
    TruncatedSpeechWarning,
)
from orpheus_trio.protocol.frames import encode_chunk, encode_eos, encode_metrics

A, B = "http://a:1", "http://b:1"
SECRET = "sk-very-secret-key"


async def test_request_shape_auth_and_params(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(speech(1, first_after=0.0)))
    tts = OrpheusTTS(A + "/", SECRET, transport=fake)
    await tts.synthesize("Hello", "tara", temperature=0.5, seed=3)
    (started,) = fake.started
    assert started.request.url == "http://a:1/v1/tts/stream"
    headers = started.request.headers
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["Accept"] == "application/x-ndjson"
    assert started.body == {
        "text": "Hello",
        "voice": "tara",
        "temperature": 0.5,
        "seed": 3,
    }


async def test_no_authorization_without_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(speech(1, first_after=0.0)))
    await OrpheusTTS(A, transport=fake).synthesize("Hello")
    assert "Authorization" not in fake.started[0].request.headers


async def test_each_hedged_attempt_has_its_own_request_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(
        in_order(
            speech(1, first_after=2.0),
            speech(2, first_after=2.0),
            speech(3, first_after=0.1),
        )
    )
    async with OrpheusTTS([A, B], transport=fake).open_stream("hi") as audio:
        ids = [s.request.headers["X-Request-Id"] for s in fake.started]
        assert len(set(ids)) == 3
        assert audio.request_id == ids[2]
        assert audio.attempts == 3


async def test_api_key_never_in_repr_or_error_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(status(401, "unauthorized", "bad key")))
    tts = OrpheusTTS(A, SECRET, transport=fake)
    assert SECRET not in repr(tts) and SECRET not in str(vars(tts))
    with pytest.raises(HTTPStatusError) as caught:
        await tts.synthesize("hi")
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert SECRET not in repr(caught.value.request.headers)
    assert SECRET not in repr(fake.started[0].request)


async def test_open_stream_exit_closes_http_stream_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(speech(1, first_after=0.1, chunks=50)))
    tts = OrpheusTTS(A, transport=fake)
    async with tts.open_stream("hi") as audio:
        first = await audio.__anext__()
        assert first == expected_audio(1, chunks=1)
        assert audio.endpoint == A and audio.ttfb_s == pytest.approx(0.1)
        exit_at = trio.current_time()
    response = fake.started[0].response
    assert response is not None and response.closed_at == exit_at
    assert tts.endpoints()[0].in_flight == 0


async def test_breaking_out_of_stream_with_aclosing_closes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(speech(1, first_after=0.1, chunks=50)))
    async with aclosing(OrpheusTTS(A, transport=fake).stream("hi")) as chunks:
        async for _ in chunks:
            break
    response = fake.started[0].response
    assert response is not None and response.closed_at is not None


async def test_metrics_and_header_queue_hints_feed_routing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = [
        (0.0, metrics(queue_depth=7)),
        (0.2, encode_chunk(0, b"ab")),
        (0.0, encode_eos(1, 1)),
    ]
    fake = FakeTransport(in_order(Script(headers={"X-Queue-Depth": "3"}, body=body)))
    tts = OrpheusTTS(A, transport=fake)
    assert await tts.synthesize("hi") == b"ab"
    (snap,) = tts.endpoints()
    assert isinstance(snap, EndpointSnapshot)
    hint = 7.0 * math.exp(-0.2 / 5.0)  # reported at t=0, read at t=0.2, fading over 5 s
    assert snap.queue_hint == pytest.approx(hint)
    assert snap.latency_estimate_s == pytest.approx(0.2)
    assert snap.score == pytest.approx(0.2 * (1 + hint))
    assert (snap.in_flight, snap.breaker_state, snap.breaker_retry_in_s) == (
        0,
        "closed",
        0.0,
    )
    assert (snap.attempts, snap.wins, snap.failures) == (1, 1, 0)


async def test_metrics_frame_queue_hint_counts_waiting_plus_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # X-Queue-Depth counts queued plus running; a metrics frame reports them apart.
    body = [
        (0.0, metrics(queue_depth=2, inflight=5, capacity=8)),
        (0.0, encode_chunk(0, b"ab")),
        (0.0, encode_eos(1, 1)),
    ]
    fake = FakeTransport(in_order(Script(headers={"X-Queue-Depth": "7"}, body=body)))
    tts = OrpheusTTS(A, transport=fake)
    assert await tts.synthesize("hi") == b"ab"
    (snap,) = tts.endpoints()
    assert snap.queue_hint == pytest.approx(7.0)


async def test_zero_chunk_stream_is_empty_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(Script(body=[(0.1, encode_eos(0, 0))])))
    assert await OrpheusTTS(A, transport=fake).synthesize("hi") == b""


async def test_empty_chunks_are_not_yielded_and_every_chunk_is_even(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = [
        (0.0, encode_chunk(0, b"")),
        (0.0, encode_chunk(1, b"abcd")),
        (0.0, encode_eos(2, 2)),
    ]
    fake = FakeTransport(in_order(Script(body=body)))
    got = [pcm async for pcm in OrpheusTTS(A, transport=fake).stream("hi")]
    assert got == [b"abcd"]


async def test_bad_input_is_rejected_clearly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(speech(1, first_after=0.0)))
    tts = OrpheusTTS(A, transport=fake)
    with pytest.raises(ValueError, match="text"):
        await tts.synthesize("   ")
    with pytest.raises(TypeError, match="voice"):
        await tts.synthesize("hi", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        await tts.synthesize("hi", timeout_s=-1)
    assert fake.started == []
    with pytest.raises(ValueError, match="http"):
        OrpheusTTS("a:1")
    with pytest.raises(ValueError, match="at least one"):
        OrpheusTTS([])
    # One server under two spellings would be routed, hedged and broken as two.
    for twice in ([A, A + "/"], ["http://Host:80/v", "HTTP://host/v/"], ["https://h", "https://h:443"]):
        with pytest.raises(ValueError, match="name the same server twice"):
            OrpheusTTS(twice)
    assert OrpheusTTS(["http://h:80/a", "http://h:80/b", "https://h:80/a"]).base_urls == (
        "http://h:80/a", "http://h:80/b", "https://h:80/a",
    )  # fmt: skip
    # URLs no request could ever reach are refused now, not at the first request.
    for url, problem in [
        ("http://127.0.0.1:99999", "bad port"),
        ("http://127.0.0.1:notaport", "bad port"),
        ("http://127.0.0.1:0", "bad port"),
        ("http://:8000", "no valid host"),
        ("http://bad host:8000", "no valid host"),
    ]:
        with pytest.raises(ValueError, match=problem):
            OrpheusTTS(url)
    assert OrpheusTTS("http://[::1]:8000").base_urls == ("http://[::1]:8000",)
    # TLS settings contradicting each other, or meant for a transport the client
    # does not make, would be ignored in part: refused on every transport.
    context = ssl.create_default_context()
    for transport in ("trio", "httpx"):
        with pytest.raises(ValueError, match="not both"):
            OrpheusTTS(A, transport=transport, ssl_context=context, verify=False)
    for tls in ({"ssl_context": context}, {"verify": False}):
        with pytest.raises(ValueError, match="set them on the transport you pass"):
            OrpheusTTS(A, transport=fake, **tls)  # type: ignore[arg-type]
    # Parts the client would drop silently (credentials would also show in reprs and errors).
    for url in ("http://user:pw@a:1", "http://a:1/p?x=1", "http://a:1/p#f"):
        with pytest.raises(ValueError, match="http") as caught:
            OrpheusTTS(url)
        assert "pw" not in str(caught.value)
    with pytest.raises(ValueError, match="hedge_ttfb_ms"):
        OrpheusTTS(A, hedge_ttfb_ms=-5)
    # Checked here, not first met inside the cleanup of a failed stream (where it
    # replaced the real error and left the response open).
    for bad in (-1, math.nan, None):
        with pytest.raises(ValueError, match=r"Timeouts\.close_s"):
            Timeouts(close_s=bad)  # type: ignore[arg-type]
    for bad in (-1, 0, math.inf, None):
        with pytest.raises(ValueError, match=r"Timeouts\.connect_s"):
            Timeouts(connect_s=bad)  # type: ignore[arg-type]
    for bad in (-1, 0, math.nan):
        with pytest.raises(ValueError, match=r"Timeouts\.read_s"):
            Timeouts(read_s=bad)
    with pytest.raises(ValueError, match=r"timeout_s \(Timeouts\.request_s\)"):
        OrpheusTTS(A, timeout_s=-1)
    # A group of the wrong kind is named, not taken for another.
    with pytest.raises(TypeError, match="hedging must be a Hedging, got Timeouts"):
        OrpheusTTS(A, hedging=Timeouts())  # type: ignore[arg-type]
    # The flat settings that only repeated a group are gone: they fail loudly.
    with pytest.raises(TypeError, match="max_attempts"):
        OrpheusTTS(A, max_attempts=2)  # type: ignore[call-arg]
    # A header carries the key: outside visible ASCII the bytes sent and the
    # bytes a server compares could differ (latin-1 vs UTF-8, trimmed spaces).
    for key in ("", "a\nb", "a\rb", "a\0b", "k\u00e9y", "key\u2603", " key", "a key", "key\t"):
        with pytest.raises(ValueError, match="api_key") as caught:
            OrpheusTTS(A, api_key=key)
        assert key not in str(caught.value) or not key
    with pytest.raises(ValueError, match="api_key must be a string"):
        OrpheusTTS(A, api_key=b"bytes-key")  # type: ignore[arg-type]


async def test_close_and_context_manager(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(speech(1, first_after=0.0)))
    async with OrpheusTTS(A, transport=fake) as tts:
        await tts.synthesize("hi")
    assert not fake.closed  # a transport the caller gave stays the caller's
    with pytest.raises(RuntimeError, match="closed"):
        await tts.synthesize("hi")


async def test_network_errors_keep_httpx_types(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTransport(in_order(Script(fail=httpx.ConnectError("refused"))))
    tts = OrpheusTTS([A, B], transport=fake, rng=random.Random(0))
    with pytest.raises(httpx.ConnectError) as caught:
        await tts.synthesize("hi")
    assert isinstance(caught.value.__cause__, ExceptionGroup)
    # the first attempt and two failovers (max_attempts=3)
    assert len(caught.value.__cause__.exceptions) == 3


def test_endpoints_snapshot_readable_outside_trio() -> None:
    fake = FakeTransport(in_order(speech(1, first_after=0.1)))
    tts = OrpheusTTS(A, transport=fake)
    trio.run(tts.synthesize, "hi", clock=trio.testing.MockClock(autojump_threshold=0))
    (snap,) = tts.endpoints()
    assert snap.latency_estimate_s == pytest.approx(0.1)
    assert (snap.wins, snap.in_flight, snap.breaker_state) == (1, 0, "closed")


async def test_request_id_outside_latin1_fails_without_exposing_the_key() -> None:
    async with OrpheusTTS(A, SECRET) as tts:  # the default transport; nothing is sent
        with pytest.raises(ValueError, match="X-Request-Id") as caught:
            async with tts.open_stream("hi", request_id="r\u2028"):
                pass
    error: BaseException | None = caught.value
    while error is not None:
        assert SECRET not in repr(error) and SECRET not in str(error)
        error = error.__cause__ or error.__context__
    assert tts.endpoints()[0].in_flight == 0


async def test_a_reply_the_service_says_was_cut_short_warns_and_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An engine reports the outcome in a metrics frame after the audio (the
    # orpheus engine: finish_reason, truncated); short audio must not pass
    # for complete without a word.
    def reply(truncated: bool) -> Script:
        return Script(
            body=[
                (0.0, encode_metrics(queue_depth=0, inflight=1)),
                (0.1, encode_chunk(0, b"\x01\x02")),
                (0.0, encode_metrics(finish_reason="length" if truncated else "stop", truncated=truncated)),
                (0.0, encode_eos(1, 1)),
            ]
        )

    fake = FakeTransport(in_order(reply(True), reply(False)))
    tts = OrpheusTTS(A, transport=fake)
    with pytest.warns(TruncatedSpeechWarning, match="cut the speech short .*'length'") as caught:
        async with tts.open_stream("hi") as audio:
            assert [pcm async for pcm in audio] == [b"\x01\x02"]
    assert caught[0].filename == __file__  # shown at the caller's line, not in trio
    assert audio.truncated and audio.metrics["finish_reason"] == "length"
    assert audio.metrics["inflight"] == 1  # the frame before the audio counts too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await tts.synthesize("hi") == b"\x01\x02"  # "stop": complete, no warning
        quiet = OrpheusTTS(A, transport=FakeTransport(in_order(reply(True))), truncation_warning=False)
        async with quiet.open_stream("hi") as audio:
            assert [pcm async for pcm in audio] == [b"\x01\x02"]
        assert audio.truncated  # said by the attribute alone


async def test_audio_stream_ended_by_aclose_or_an_error_stays_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cut = Script(body=[(0.1, encode_chunk(0, b"\x01\x02")), (0.0, b'{"type": "err')])
    fake = FakeTransport(in_order(speech(1, first_after=0.1, chunks=5), cut))
    tts = OrpheusTTS(A, transport=fake)
    async with tts.open_stream("hi") as audio:
        await audio.__anext__()
        await audio.aclose()
        assert [pcm async for pcm in audio] == []
    async with tts.open_stream("hi") as audio:
        assert await audio.__anext__() == b"\x01\x02"
        with pytest.raises(httpx.RemoteProtocolError):
            await audio.__anext__()
        assert [pcm async for pcm in audio] == []
    assert tts.endpoints()[0].in_flight == 0


async def test_truncation_warning_points_at_the_callers_line_from_stream_and_synthesize(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cut = Script(
        body=[
            (0.1, encode_chunk(0, b"\x01\x02")),
            (0.0, encode_metrics(finish_reason="length", truncated=True)),
            (0.0, encode_eos(1, 1)),
        ]
    )
    tts = OrpheusTTS(A, transport=FakeTransport(in_order(cut)))
    with pytest.warns(TruncatedSpeechWarning) as from_stream:
        assert [pcm async for pcm in tts.stream("hi")] == [b"\x01\x02"]
    with pytest.warns(TruncatedSpeechWarning) as from_synthesize:
        assert await tts.synthesize("hi") == b"\x01\x02"
    assert [w.filename for w in from_stream] == [__file__]
    assert [w.filename for w in from_synthesize] == [__file__]
