"""The realtime socket's state (sans-IO): messages in, actions out, exact times."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orpheus_trio.server.engines.synthetic import SyntheticEngine
from orpheus_trio.server.realtime.framing import FramingError, decode_audio, encode_audio
from orpheus_trio.server.realtime.session import (
    Close,
    Limits,
    RealtimeSession,
    SendJSON,
    Speak,
    Stop,
)


def session(**limits: Any) -> RealtimeSession:
    s = RealtimeSession(SyntheticEngine().validate, Limits(**limits))
    s.start(0.0)
    return s


def msg(**fields: Any) -> str:
    return json.dumps(fields)


def spoken(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.context_id, a.text) for a in actions if isinstance(a, Speak)]


def sent(actions: list[Any]) -> list[dict[str, Any]]:
    return [a.message for a in actions if isinstance(a, SendJSON)]


def test_text_is_cut_into_sentences_with_the_stream_text_chunker() -> None:
    s = session()
    actions = s.receive_message(msg(context_id="a", text="Hello there. How", voice="leo", **{"continue": True}), 0.0)
    assert spoken(actions) == [("a", "Hello there.")]
    speak = actions[0]
    assert speak.voice == "leo"
    # The rest waits for its sentence to end (too short for the chunker's early cut).
    assert s.receive_message(msg(context_id="a", text=" are you", **{"continue": True}), 0.1) == []
    assert s.deadline is None
    actions = s.receive_message(msg(context_id="a", text="?"), 0.2)  # continue false: the end
    assert spoken(actions) == [("a", "How are you?")]
    assert sent(actions) == []  # not done until both pieces were spoken
    assert s.piece_done("a", 0.3) == []
    assert sent(s.piece_done("a", 0.4)) == [
        {"type": "done", "context_id": "a", "chunks": 0, "samples": 0}
    ]
    assert s.open_contexts == 0


def test_done_carries_the_totals_of_the_audio_sent() -> None:
    s = session()
    s.receive_message(msg(context_id="a", text="Hi."), 0.0)
    frame = s.audio("a", b"\x01\x00" * 10)
    assert frame is not None and decode_audio(frame) == ("a", b"\x01\x00" * 10)
    s.audio("a", b"\x02\x00" * 5)
    assert sent(s.piece_done("a", 1.0)) == [
        {"type": "done", "context_id": "a", "chunks": 2, "samples": 15}
    ]


def test_flush_speaks_the_buffer_now_and_keeps_the_context_open() -> None:
    s = session()
    assert s.receive_message(msg(context_id="a", text="no end yet", **{"continue": True}), 0.0) == []
    actions = s.receive_message(msg(type="flush", context_id="a"), 0.05)
    assert spoken(actions) == [("a", "no end yet")]
    assert s.open_contexts == 1
    actions = s.receive_message(msg(context_id="a", text="More.", flush=True, **{"continue": True}), 0.1)
    assert spoken(actions) == [("a", "More.")]
    actions = s.receive_message(msg(type="close_context", context_id="a"), 0.2)
    assert spoken(actions) == [] and sent(actions) == []
    s.piece_done("a", 0.3)
    assert sent(s.piece_done("a", 0.3))[0]["type"] == "done"


def test_the_chunker_deadline_drives_poll_exactly() -> None:
    s = session()
    s.receive_message(msg(context_id="a", text="Ends like this.", **{"continue": True}), 1.0)
    # A sentence end with nothing after it: ready after the chunker's end wait (0.1 s).
    assert s.deadline == pytest.approx(1.1)
    assert s.poll(1.09) == []
    assert spoken(s.poll(1.1)) == [("a", "Ends like this.")]


def test_cancel_stops_the_context_and_drops_its_later_audio() -> None:
    s = session()
    s.receive_message(msg(context_id="a", text="One. Two. Three."), 0.0)
    assert s.audio("a", b"\x00\x00" * 4) is not None
    actions = s.receive_message(msg(type="cancel", context_id="a"), 0.5)
    assert actions[0] == Stop("a")
    assert sent(actions) == [
        {"type": "done", "context_id": "a", "chunks": 1, "samples": 4, "cancelled": True}
    ]
    assert s.audio("a", b"\x00\x00") is None  # queued before the cancel: never sent
    assert s.piece_done("a", 0.6) == []


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_request"),
        ("[1, 2]", "invalid_request"),
        (msg(text="no id"), "invalid_request"),
        (msg(context_id="bad id!", text="x"), "invalid_request"),
        (msg(context_id="a" * 65, text="x"), "invalid_request"),
        (msg(type="dance", context_id="a"), "invalid_request"),
        (msg(context_id="a", text="x", colour="red"), "invalid_request"),
        (msg(context_id="a", text=5), "invalid_request"),
        (msg(context_id="a", text="x", voice="nobody"), "invalid_param"),
        (msg(context_id="a", text="x", temperature=9), "invalid_param"),
        (msg(type="flush", context_id="nope"), "not_found"),
        (msg(type="cancel", context_id="nope"), "not_found"),
    ],
)
def test_bad_messages_get_a_specific_error_and_the_socket_lives_on(raw: str, code: str) -> None:
    s = session()
    actions = s.receive_message(raw, 0.0)
    [error] = sent(actions)
    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert not any(isinstance(a, Close) for a in actions)
    assert spoken(s.receive_message(msg(context_id="ok", text="Fine."), 0.1)) == [("ok", "Fine.")]


def test_binary_client_messages_are_refused() -> None:
    [error] = sent(session().receive_message(b'{"context_id": "a"}', 0.0))
    assert error["code"] == "invalid_request" and "binary" in error["message"]


def test_limits_contexts_text_and_message_size() -> None:
    s = session(max_contexts=2, max_text_chars=10, max_message_bytes=200)
    for cid in ("a", "b"):
        s.receive_message(msg(context_id=cid, text="x", **{"continue": True}), 0.0)
    [error] = sent(s.receive_message(msg(context_id="c", text="x"), 0.0))
    assert (error["code"], error["context_id"]) == ("overloaded", "c")
    actions = s.receive_message(msg(context_id="a", text="y" * 10), 0.0)
    assert sent(actions)[0]["code"] == "text_too_long"
    assert Stop("a") in actions and s.open_contexts == 1  # the context is dropped, not the socket
    actions = s.receive_message("x" * 201, 0.0)
    assert actions[-1] == Close(1009, "message too big") and Stop("b") in actions
    assert s.receive_message(msg(context_id="z", text="x"), 0.0) == []  # closed: nothing more


def test_later_messages_cannot_change_voice_or_take_text_after_the_end() -> None:
    s = session()
    s.receive_message(msg(context_id="a", text="Hi", voice="leo", **{"continue": True}), 0.0)
    assert sent(s.receive_message(msg(context_id="a", text="x", voice="tara"), 0.0))[0][
        "code"
    ] == "invalid_request"
    s.receive_message(msg(context_id="b", text="End."), 0.0)  # b's input ended
    error = sent(s.receive_message(msg(context_id="b", text="more"), 0.0))[0]
    assert error["code"] == "invalid_request" and "no more text" in error["message"]


def test_idle_socket_closes_after_the_idle_timeout_but_not_while_speaking() -> None:
    s = session(idle_timeout_s=5.0)
    assert s.deadline == 5.0
    s.receive_message(msg(context_id="a", text="Hello."), 1.0)
    assert s.poll(100.0) == []  # a context is open: not idle
    s.piece_done("a", 100.0)
    assert s.deadline == 105.0
    assert s.poll(104.9) == []
    assert s.poll(105.0) == [Close(1000, "idle")]


def test_a_client_looping_on_bad_messages_is_closed() -> None:
    s = session(max_errors=3)
    s.receive_message("x", 0.0)
    s.receive_message("x", 0.0)
    assert s.receive_message("x", 0.0)[-1] == Close(1008, "too many bad messages")


def test_engine_failure_is_an_error_for_that_context_only() -> None:
    s = session()
    s.receive_message(msg(context_id="a", text="One.", **{"continue": True}), 0.0)
    s.receive_message(msg(context_id="b", text="Two.", **{"continue": True}), 0.0)
    actions = s.piece_failed("a", "engine_error", "boom", 0.1)
    assert sent(actions) == [
        {"type": "error", "code": "engine_error", "message": "boom", "context_id": "a"}
    ]
    assert Stop("a") in actions and s.open_contexts == 1


def test_audio_framing_round_trips_and_refuses_garbage() -> None:
    assert decode_audio(encode_audio("ctx-1", b"\x01\x02")) == ("ctx-1", b"\x01\x02")
    for bad in (b"", b"\x05ab", b"\x01a\x00"):
        with pytest.raises(FramingError):
            decode_audio(bad)


def test_draining_refuses_new_contexts_and_closes_1001_once_none_is_open() -> None:
    s = session()
    s.receive_message(msg(context_id="a", text="Speaking."), 0.0)
    s.draining = True
    assert s.poll(0.1) == []  # "a" still speaks
    [error] = sent(s.receive_message(msg(context_id="b", text="New."), 0.2))
    assert (error["code"], error["context_id"]) == ("draining", "b")
    actions = s.piece_done("a", 0.3)
    assert sent(actions)[0]["type"] == "done"
    assert actions[-1] == Close(1001, "server shutting down")
