"""Reading and checking a synthesis request, as plain functions: no server, no socket."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from orpheus_trio.server.engine import InvalidParam
from orpheus_trio.server.exchange import HTTPError, Message
from orpheus_trio.server.requests import (
    SynthesisRequest,
    check_content_type,
    check_timeout,
    parse_synthesis_body,
    read_body,
    valid_unicode,
)


def accept_all(voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
    return params


def parse(body: object, validate: Any = accept_all) -> SynthesisRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_synthesis_body(
        raw, max_text_chars=10, default_timeout_s=5.0, max_timeout_s=60.0, validate=validate
    )


def refusal(body: object, validate: Any = accept_all) -> tuple[int, str, str, str | None]:
    with pytest.raises(HTTPError) as caught:
        parse(body, validate)
    error = caught.value
    return error.status, error.code, error.message, error.param


def test_a_good_body_gives_text_voice_capped_timeout_and_the_engines_params() -> None:
    def validate(voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        assert voice == "tara"
        return {**params, "checked": True}

    request = parse({"text": "hello", "voice": "tara", "timeout_s": 900, "x": 1}, validate)
    assert request == SynthesisRequest(
        "hello", "tara", 60.0, {"timeout_s": 60.0, "x": 1, "checked": True}
    )
    assert parse({"text": "hi"}).timeout_s == 5.0  # the default


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{", (400, "invalid_request", "body is not valid JSON: Expecting property name "
                "enclosed in double quotes: line 1 column 2 (char 1)", None)),
        (b"[" * 100_000, (400, "invalid_request",
                          "body is not valid JSON: arrays or objects nested too deeply", None)),
        (b"1" * 5000, (400, "invalid_request",
                       "body is not valid JSON: a number has more digits than the limit of 4300",
                       None)),
        ([], (400, "invalid_request", "body must be a JSON object", None)),
        ({}, (400, "invalid_request", "missing required field 'text'", None)),
        ({"text": 3}, (400, "invalid_param", "text must be a string, got int", "text")),
        ({"text": "  "}, (400, "invalid_request", "text is empty", None)),
        ({"text": "x" * 11}, (413, "text_too_long", "text has 11 characters; the limit is 10",
                              None)),
        ({"text": "a", "voice": 1}, (400, "invalid_param",
                                     "voice must be a string or null, got int", "voice")),
        ({"text": "a", "timeout_s": True}, (400, "invalid_param",
                                            "timeout_s must be a positive number, got True",
                                            "timeout_s")),
        (b'{"text": "a", "v": "\\ud800"}', (400, "invalid_param",
                                            "'v' holds a lone surrogate (\\uD800-\\uDFFF): "
                                            "not valid Unicode text", "v")),
    ],
)  # fmt: skip
def test_each_bad_body_gets_its_own_answer(
    body: object, expected: tuple[int, str, str, str | None]
) -> None:
    assert refusal(body) == expected


def test_the_engines_refusal_names_the_parameter() -> None:
    def validate(voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        raise InvalidParam("top_p", "must be between 0 and 1, got 2")

    assert refusal({"text": "a", "top_p": 2}, validate) == (
        400, "invalid_param", "top_p: must be between 0 and 1, got 2", "top_p"
    )  # fmt: skip


@pytest.mark.parametrize("value", [0, -1, float("nan"), "5", None, 10**400])
def test_timeout_must_be_a_positive_number(value: object) -> None:
    if value == 10**400:  # huge but positive: capped, never past float's range
        assert check_timeout(value, 60.0) == 60.0
        return
    with pytest.raises(HTTPError) as caught:
        check_timeout(value, 60.0)
    assert (caught.value.status, caught.value.param) == (400, "timeout_s")


def test_lone_surrogates_are_found_however_deep() -> None:
    assert valid_unicode({"a": ["b", {"c": "d"}]})
    assert not valid_unicode({"a": ["b", {"c": "\ud800"}]})
    assert not valid_unicode({"\udfff": 1})


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8"])
def test_json_content_types_pass(content_type: str) -> None:
    check_content_type({"content-type": content_type})


@pytest.mark.parametrize(("headers", "shown"), [({}, "'none'"), ({"content-type": "text/plain"}, "'text/plain'")])
def test_other_content_types_are_415(headers: dict[str, str], shown: str) -> None:
    with pytest.raises(HTTPError) as caught:
        check_content_type(headers)
    assert caught.value.status == 415 and caught.value.close
    assert caught.value.message == f"Content-Type must be application/json, got {shown}"


def receiver(messages: list[Message]) -> Any:
    async def receive() -> Message:
        if not messages:
            await trio.sleep_forever()
        return messages.pop(0)

    return receive


def body(data: bytes, more: bool = False) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


async def test_the_body_is_read_whole() -> None:
    receive = receiver([body(b"ab", more=True), body(b"c")])
    assert await read_body({}, receive, limit=3, read_timeout_s=1) == b"abc"


async def test_a_declared_length_past_the_limit_is_413_before_reading() -> None:
    receive = receiver([])  # reading would wait forever
    with pytest.raises(HTTPError) as caught:
        await read_body({"content-length": "4"}, receive, limit=3, read_timeout_s=1)
    assert (caught.value.status, caught.value.code, caught.value.close) == (413, "body_too_large", True)
    assert caught.value.message == "request body of 4 bytes exceeds the limit of 3"


async def test_a_body_growing_past_the_limit_is_413() -> None:
    receive = receiver([body(b"ab", more=True), body(b"cd", more=True)])
    with pytest.raises(HTTPError) as caught:
        await read_body({}, receive, limit=3, read_timeout_s=1)
    assert caught.value.message == "request body exceeds the limit of 3 bytes"


async def test_a_caller_that_leaves_mid_body_is_499() -> None:
    receive = receiver([body(b"ab", more=True), {"type": "http.disconnect"}])
    with pytest.raises(HTTPError) as caught:
        await read_body({}, receive, limit=3, read_timeout_s=1)
    assert (caught.value.status, caught.value.code) == (499, "cancelled")


async def test_a_body_that_does_not_arrive_in_time_is_408_at_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    receive = receiver([body(b"a", more=True)])
    with pytest.raises(HTTPError) as caught:
        await read_body({}, receive, limit=3, read_timeout_s=0.25)
    assert trio.current_time() == 0.25
    assert (caught.value.status, caught.value.code) == (408, "request_timeout")
    assert caught.value.message == "request body not received within 0.25 s"
