"""Example tests for the v1 frame decoder: every contract rule, on every decoder built."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from _support_frames import DECODER_IDS, DECODERS, run_decoder, split_at

from orpheus_trio.errors import IncompleteStreamError, ProtocolError
from orpheus_trio.protocol.frames import (
    DEFAULT_MAX_LINE_BYTES,
    Chunk,
    EndOfStream,
    ErrorFrame,
    Metrics,
    encode_chunk,
    encode_eos,
    encode_error,
    encode_metrics,
)

pytestmark = pytest.mark.parametrize("decoder_cls", DECODERS, ids=DECODER_IDS)

PCM0 = bytes(range(16))
PCM1 = b"\x01\x00" * 300
GOOD_BODY = (
    encode_metrics(queue_depth=2, inflight=1)
    + encode_chunk(0, PCM0)
    + encode_chunk(1, PCM1)
    + encode_metrics(rtf=0.4)
    + encode_eos(2, (len(PCM0) + len(PCM1)) // 2)
)
GOOD_FRAMES = [
    Metrics({"queue_depth": 2, "inflight": 1}),
    Chunk(0, PCM0),
    Chunk(1, PCM1),
    Metrics({"rtf": 0.4}),
    EndOfStream(2, (len(PCM0) + len(PCM1)) // 2),
]


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


def decode_error(decoder_cls: Any, body: bytes, **kwargs: Any) -> ProtocolError:
    frames, error = run_decoder(decoder_cls, [body], **kwargs)
    assert isinstance(error, ProtocolError), (frames, error)
    return error


# --- valid streams --------------------------------------------------------------


def test_whole_body_in_one_piece_decodes_every_frame(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(GOOD_BODY) == GOOD_FRAMES
    assert decoder.finished
    assert decoder.chunks_received == 2
    assert decoder.samples_received == (len(PCM0) + len(PCM1)) // 2
    decoder.close()


def test_every_split_point_gives_the_same_frames(decoder_cls: Any) -> None:
    for cut in range(len(GOOD_BODY) + 1):
        assert run_decoder(decoder_cls, split_at(GOOD_BODY, [cut])) == (
            GOOD_FRAMES,
            None,
        ), cut


def test_byte_by_byte_feeding_gives_the_same_frames(decoder_cls: Any) -> None:
    pieces = [GOOD_BODY[i : i + 1] for i in range(len(GOOD_BODY))]
    assert run_decoder(decoder_cls, pieces) == (GOOD_FRAMES, None)


def test_frames_come_out_as_soon_as_their_line_ends(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    line = encode_chunk(0, PCM0)
    assert decoder.feed(line[:-1]) == []
    assert decoder.feed(b"\n") == [Chunk(0, PCM0)]
    assert not decoder.finished


def test_crlf_terminators_and_blank_lines_are_accepted(decoder_cls: Any) -> None:
    body = b"\n \t\r\n" + GOOD_BODY.replace(b"\n", b"\r\n\r\n")
    assert run_decoder(decoder_cls, [body]) == (GOOD_FRAMES, None)


def test_bytearray_and_memoryview_pieces_are_accepted(decoder_cls: Any) -> None:
    half = len(GOOD_BODY) // 2
    pieces = [bytearray(GOOD_BODY[:half]), memoryview(GOOD_BODY)[half:]]
    assert run_decoder(decoder_cls, pieces) == (GOOD_FRAMES, None)


def test_unknown_frame_types_and_fields_are_ignored(decoder_cls: Any) -> None:
    body = (
        b'{"type":"future_thing","x":[1,2]}\n'
        + b'{"type":"chunk","seq":0,"audio":"%s","speaker":"a","extra":{"k":null}}\n'
        % b64(PCM0).encode()
        + b'{"type":"eos","chunks":1,"samples":8,"duration_s":0.1}\n'
    )
    assert run_decoder(decoder_cls, [body]) == (
        [Chunk(0, PCM0), EndOfStream(1, 8)],
        None,
    )


def test_metrics_frame_keeps_every_field_but_type(decoder_cls: Any) -> None:
    body = b'{"queue_depth":3,"type":"metrics","custom":{"a":[1]}}\n' + encode_eos(0, 0)
    frames, error = run_decoder(decoder_cls, [body])
    assert error is None
    assert frames == [
        Metrics({"queue_depth": 3, "custom": {"a": [1]}}),
        EndOfStream(0, 0),
    ]


def test_empty_stream_with_only_eos_is_complete(decoder_cls: Any) -> None:
    assert run_decoder(decoder_cls, [encode_eos(0, 0)]) == ([EndOfStream(0, 0)], None)


def test_empty_audio_chunk_is_zero_samples(decoder_cls: Any) -> None:
    body = encode_chunk(0, b"") + encode_eos(1, 0)
    assert run_decoder(decoder_cls, [body]) == (
        [Chunk(0, b""), EndOfStream(1, 0)],
        None,
    )


def test_error_frame_is_returned_and_ends_the_stream(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    frames = decoder.feed(
        encode_chunk(0, PCM0) + encode_error("engine_error", "GPU fell over")
    )
    assert frames == [Chunk(0, PCM0), ErrorFrame("engine_error", "GPU fell over")]
    assert decoder.finished
    decoder.close()


def test_whitespace_after_the_end_is_fine(decoder_cls: Any) -> None:
    body = encode_eos(0, 0) + b"\r\n \n\t"
    assert run_decoder(decoder_cls, [body, b"  ", b"\n"]) == ([EndOfStream(0, 0)], None)


# --- lines the fast path must not misread: both decoders agree with exact JSON ----


@pytest.mark.parametrize(
    "line",
    [
        # other key orders and unusual whitespace
        b'{"seq":0,"audio":"%(a)s","type":"chunk"}',
        b'{"audio":"%(a)s","type":"chunk","seq":0}',
        b'{ "type" : "chunk" , "seq" : 0 , "audio" : "%(a)s" }',
        b'{"type":"chunk","seq":0,"audio":"%(a)s"} ',
        b'\t{"type":"chunk","seq":0,"audio":"%(a)s"}',
        b'{"type":"chunk","seq":0 ,"audio":"%(a)s"}',
        # escapes in keys and values
        b'{"type":"chunk","seq":0,"\\u0061udio":"%(a)s"}',
        b'{"\\u0074ype":"chunk","seq":0,"audio":"%(a)s"}',
        b'{"type":"\\u0063hunk","seq":0,"audio":"%(a)s"}',
        # duplicate keys: the last one wins, as in json.loads
        b'{"type":"chunk","seq":0,"audio":"////","audio":"%(a)s"}',
        b'{"type":"chunk","seq":7,"seq":0,"audio":"%(a)s"}',
        # braces and quotes inside other fields' string values
        b'{"type":"chunk","note":"}\\"{","seq":0,"audio":"%(a)s"}',
        b'{"type":"chunk","seq":0,"audio":"%(a)s","note":"\\"}"}',
        # a number the fast path does not take literally
        b'{"type":"chunk","seq":-0,"audio":"%(a)s"}',
    ],
)
def test_chunk_lines_outside_the_plain_form_decode_exactly(
    decoder_cls: Any, line: bytes
) -> None:
    body = line % {b"a": b64(PCM0).encode()} + b"\n"
    frames, error = run_decoder(decoder_cls, [body], close=False)
    assert error is None
    assert frames == [Chunk(0, PCM0)]


def test_escaped_slash_in_audio_is_a_slash(decoder_cls: Any) -> None:
    pcm = base64.b64decode("AA//AA==")
    body = b'{"type":"chunk","seq":0,"audio":"AA\\/\\/AA=="}\n'
    assert run_decoder(decoder_cls, [body], close=False) == ([Chunk(0, pcm)], None)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            b'{"type":"chunk","seq":01,"audio":"AAAA"}',
            "invalid JSON: Expecting ',' delimiter (column 24)",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AA\\"}',
            "invalid JSON: Unterminated string starting at (column 33)",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AAAA"}}',
            "invalid JSON: Extra data (column 40)",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AA\\nA"}',
            "chunk field 'audio' is not strict base64",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AAAA","audio":"AAA"}',
            "chunk field 'audio' is not strict base64",
        ),
        (
            b'{"type":"chunk","seq":0.0,"audio":"AAAA"}',
            "chunk field 'seq' must be an integer, got a number",
        ),
        (
            b'{"type":"chunk","seq":1e0,"audio":"AAAA"}',
            "chunk field 'seq' must be an integer, got a number",
        ),
    ],
)
def test_chunk_lines_that_look_plain_but_are_not_fail_exactly(
    decoder_cls: Any, line: bytes, reason: str
) -> None:
    error = decode_error(decoder_cls, line + b"\n")
    assert error.line == 1
    assert error.reason.startswith(reason), error.reason


# --- contract violations -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            b"{not json",
            "invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        ),
        (b'{"type":"metrics","x":NaN}', "invalid JSON: NaN is not valid JSON"),
        (
            b'{"type":"metrics","x":-Infinity}',
            "invalid JSON: -Infinity is not valid JSON",
        ),
        (b"[1,2]", "frame must be a JSON object, got an array"),
        (b'"chunk"', "frame must be a JSON object, got a string"),
        (b"null", "frame must be a JSON object, got null"),
        (b'{"seq":0}', "the frame has no 'type' field"),
        (b'{"type":3}', "the field 'type' must be a string, got an integer"),
        (b'{"type":"chunk","audio":"AAAA"}', "chunk frame has no 'seq' field"),
        (
            b'{"type":"chunk","seq":"0","audio":"AAAA"}',
            "chunk field 'seq' must be an integer, got a string",
        ),
        (
            b'{"type":"chunk","seq":true,"audio":"AAAA"}',
            "chunk field 'seq' must be an integer, got a boolean",
        ),
        (b'{"type":"chunk","seq":0}', "chunk frame has no 'audio' field"),
        (
            b'{"type":"chunk","seq":0,"audio":null}',
            "chunk field 'audio' must be a string, got null",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AAA"}',
            "chunk field 'audio' is not strict base64",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AA=A"}',
            "chunk field 'audio' is not strict base64",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AA A"}',
            "chunk field 'audio' is not strict base64",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AA-_"}',
            "chunk field 'audio' is not strict base64",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AAAA===="}',
            "chunk field 'audio' is not strict base64",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"\xc3\xa9AAA"}',
            "chunk field 'audio' is not strict base64",
        ),
        (
            b'{"type":"chunk","seq":0,"audio":"AAAA"}',
            "chunk audio holds 3 bytes, not a whole number",
        ),
        (b'{"type":"eos","chunks":0}', "eos frame has no 'samples' field"),
        (
            b'{"type":"eos","chunks":"0","samples":0}',
            "eos field 'chunks' must be an integer, got a string",
        ),
        (b'{"type":"error","message":"m"}', "error frame has no 'code' field"),
        (
            b'{"type":"error","code":"x","message":5}',
            "error field 'message' must be a string, got an integer",
        ),
        (
            b'{"type":"metrics","x":"\xff"}',
            "line is not valid UTF-8 (invalid start byte at byte 23)",
        ),
        (b"[" * 100_000, "invalid JSON: nested too deeply"),
    ],
)
def test_bad_lines_are_protocol_errors_naming_the_line(
    decoder_cls: Any, line: bytes, reason: str
) -> None:
    body = encode_metrics(a=1) + b"\n" + line + b"\n" + encode_eos(0, 0)
    error = decode_error(decoder_cls, body)
    assert error.line == 3
    assert error.reason.startswith(reason), error.reason
    assert str(error).startswith("protocol error: line 3: ")


def test_nothing_of_a_bad_chunk_line_is_returned(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(encode_chunk(0, PCM0)) == [Chunk(0, PCM0)]
    with pytest.raises(ProtocolError):
        decoder.feed(b'{"type":"chunk","seq":1,"audio":"AAA"}\n')
    assert decoder.chunks_received == 1
    assert decoder.samples_received == len(PCM0) // 2


def test_first_seq_must_be_zero(decoder_cls: Any) -> None:
    error = decode_error(decoder_cls, encode_chunk(1, PCM0))
    assert error == ProtocolError("chunk seq out of order: expected 0, got 1", 1)


def test_seq_gap_is_a_protocol_error(decoder_cls: Any) -> None:
    error = decode_error(decoder_cls, encode_chunk(0, PCM0) + encode_chunk(2, PCM0))
    assert error == ProtocolError("chunk seq out of order: expected 1, got 2", 2)


def test_seq_repeat_is_a_protocol_error(decoder_cls: Any) -> None:
    error = decode_error(
        decoder_cls, encode_chunk(0, PCM0) + b"\n" + encode_chunk(0, PCM0)
    )
    assert error == ProtocolError("chunk seq out of order: expected 1, got 0", 3)


def test_huge_seq_is_reported_exactly(decoder_cls: Any) -> None:
    body = b'{"type":"chunk","seq":123456789012345678901234567890,"audio":"AAAAAA=="}\n'
    error = decode_error(decoder_cls, body)
    assert error == ProtocolError(
        "chunk seq out of order: expected 0, got 123456789012345678901234567890", 1
    )


@pytest.mark.parametrize(("chunks", "samples"), [(1, 8), (2, 7), (3, 9)])
def test_eos_totals_must_match_what_arrived(
    decoder_cls: Any, chunks: int, samples: int
) -> None:
    body = (
        encode_chunk(0, PCM0) + encode_chunk(1, b"\0\0") + encode_eos(chunks, samples)
    )
    error = decode_error(decoder_cls, body)
    assert error == ProtocolError(
        f"eos totals do not match the stream: expected chunks=2 samples=9 (what arrived), "
        f"got chunks={chunks} samples={samples}",
        3,
    )


@pytest.mark.parametrize(
    "after",
    [
        b"x",
        b"\n\n  {",
        encode_metrics(a=1),
        encode_eos(0, 0),
        b'\r\n{"type":"unknown"}\n',
    ],
)
def test_data_after_eos_is_a_protocol_error(decoder_cls: Any, after: bytes) -> None:
    body = encode_eos(0, 0) + after
    expected_line = 2 + after.count(b"\n", 0, len(after) - len(after.lstrip()))
    error = decode_error(decoder_cls, body)
    assert error == ProtocolError("data after end of stream", expected_line)


def test_data_after_error_frame_is_a_protocol_error_in_a_later_piece(
    decoder_cls: Any,
) -> None:
    decoder = decoder_cls()
    assert decoder.feed(encode_error("cancelled", "bye")) == [
        ErrorFrame("cancelled", "bye")
    ]
    assert decoder.feed(b"  \r\n") == []
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(b" ?")  # raised at once, without waiting for the line to end
    assert caught.value == ProtocolError("data after end of stream", 3)


def test_a_failed_decoder_keeps_failing_with_an_equal_error(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    with pytest.raises(ProtocolError) as first:
        decoder.feed(b"nope\n")
    with pytest.raises(ProtocolError) as again:
        decoder.feed(encode_eos(0, 0))
    with pytest.raises(ProtocolError) as on_close:
        decoder.close()
    assert first.value == again.value == on_close.value
    assert first.value.line == 1


BAD_LINE = b'{"type":"chunk","seq":2,"audio":"AAA*"}\n'
BAD_LINE_ERROR = ProtocolError(
    "chunk field 'audio' is not strict base64 (only A-Z a-z 0-9 + /, '=' padding required)",
    4,
)


def test_frames_before_a_bad_line_in_one_piece_arrive_then_the_error(
    decoder_cls: Any,
) -> None:
    decoder = decoder_cls()
    piece = (
        encode_chunk(0, PCM0)
        + encode_metrics(a=1)
        + encode_chunk(1, PCM1)
        + BAD_LINE
        + encode_chunk(2, PCM0)  # valid, but after the bad line: never returned
        + encode_eos(3, 0)
    )
    assert decoder.feed(piece) == [Chunk(0, PCM0), Metrics({"a": 1}), Chunk(1, PCM1)]
    assert (decoder.chunks_received, decoder.finished) == (2, False)
    with pytest.raises(ProtocolError) as deferred:
        decoder.feed(b"")  # the next call raises, whatever it brings
    assert deferred.value == BAD_LINE_ERROR
    with pytest.raises(ProtocolError) as again:
        decoder.feed(encode_chunk(2, PCM0))
    with pytest.raises(ProtocolError) as on_close:
        decoder.close()
    assert again.value == on_close.value == BAD_LINE_ERROR
    assert decoder.chunks_received == 2


def test_deferred_error_is_raised_by_close_too(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(encode_chunk(0, PCM0) + b"nope\n") == [Chunk(0, PCM0)]
    with pytest.raises(ProtocolError) as caught:
        decoder.close()
    assert caught.value == ProtocolError("invalid JSON: Expecting value (column 1)", 2)


def test_a_bad_line_first_in_a_piece_raises_at_once(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(encode_chunk(0, PCM0) + encode_chunk(1, PCM1)) == [
        Chunk(0, PCM0),
        Chunk(1, PCM1),
    ]
    # Blank lines and unknown frames return nothing: the bad line is still first.
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(b'\n{"type":"later"}\n' + BAD_LINE + encode_eos(2, 0))
    assert caught.value == ProtocolError(BAD_LINE_ERROR.reason, 5)
    assert decoder.chunks_received == 2


def test_every_split_delivers_the_frames_before_the_bad_line(
    decoder_cls: Any,
) -> None:
    body = encode_chunk(0, PCM0) + encode_chunk(1, PCM1) + BAD_LINE[:-1] + b"\r\n"
    body += encode_chunk(2, PCM0) + encode_eos(3, 0)
    bad_at = body.index(BAD_LINE[:-1])
    for first in range(0, len(body) + 1, 7):
        for second in (first, bad_at, bad_at + 3, len(body)):
            frames, error = run_decoder(decoder_cls, split_at(body, [first, second]))
            assert frames == [Chunk(0, PCM0), Chunk(1, PCM1)], (first, second)
            assert error == ProtocolError(BAD_LINE_ERROR.reason, 3), (first, second)


def test_line_over_the_limit_after_good_frames_is_raised_by_the_next_call(
    decoder_cls: Any,
) -> None:
    decoder = decoder_cls(max_line_bytes=100)
    assert decoder.feed(encode_metrics(a=1) + b"x" * 101) == [Metrics({"a": 1})]
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(b"\n")
    assert caught.value == ProtocolError("line longer than the limit of 100 bytes", 2)


def test_data_after_eos_in_the_same_piece_is_raised_by_the_next_call(
    decoder_cls: Any,
) -> None:
    decoder = decoder_cls()
    assert decoder.feed(encode_eos(0, 0) + b"\n x") == [EndOfStream(0, 0)]
    assert decoder.finished
    with pytest.raises(ProtocolError) as caught:
        decoder.close()
    assert caught.value == ProtocolError("data after end of stream", 3)


# --- end of body ------------------------------------------------------------------


def test_close_without_eos_is_an_incomplete_stream(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    decoder.feed(encode_chunk(0, PCM0) + encode_chunk(1, PCM0) + b"\n")
    with pytest.raises(IncompleteStreamError) as caught:
        decoder.close()
    assert caught.value.chunks_received == 2
    assert "without an eos or error frame, after 2 chunks" in str(caught.value)


def test_close_on_an_empty_body_is_an_incomplete_stream(decoder_cls: Any) -> None:
    with pytest.raises(IncompleteStreamError):
        decoder_cls().close()


def test_final_line_without_newline_counts_as_cut_even_if_it_parses(
    decoder_cls: Any,
) -> None:
    # Strict on purpose: close() returns no frames, so accepting the line could lose an error frame.
    for last in (encode_eos(1, 8), encode_error("internal", "x")):
        decoder = decoder_cls()
        decoder.feed(encode_chunk(0, PCM0) + last.rstrip(b"\n"))
        with pytest.raises(IncompleteStreamError) as caught:
            decoder.close()
        assert "inside line 2" in str(caught.value)
        assert not decoder.finished


def test_final_blank_partial_line_is_not_a_cut_line(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    decoder.feed(b"\n  \r")
    with pytest.raises(IncompleteStreamError) as caught:
        decoder.close()
    assert "inside line" not in str(caught.value)


def test_close_after_eos_is_a_no_op_and_can_repeat(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    decoder.feed(encode_eos(0, 0) + b"  ")
    decoder.close()
    decoder.close()


def test_feed_after_close_is_a_usage_error(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    decoder.feed(encode_eos(0, 0))
    decoder.close()
    with pytest.raises(RuntimeError, match="after close"):
        decoder.feed(b"\n")


# --- line length limit --------------------------------------------------------------


def metrics_line_of(length: int) -> bytes:
    """A metrics line of exactly ``length`` bytes, no terminator."""
    head = b'{"type":"metrics","pad":"'
    return head + b"x" * (length - len(head) - 2) + b'"}'


def test_default_line_limit_is_4_mib(decoder_cls: Any) -> None:
    assert DEFAULT_MAX_LINE_BYTES == 4 * 1024 * 1024
    assert decoder_cls().max_line_bytes == DEFAULT_MAX_LINE_BYTES


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_line_of_exactly_the_limit_is_accepted(
    decoder_cls: Any, terminator: bytes
) -> None:
    body = metrics_line_of(100) + terminator + encode_eos(0, 0)
    for cut in range(len(body) + 1):
        frames, error = run_decoder(
            decoder_cls, split_at(body, [cut]), max_line_bytes=100
        )
        assert error is None, cut
        assert len(frames) == 2


def test_line_one_byte_over_the_limit_is_rejected(decoder_cls: Any) -> None:
    body = encode_metrics(a=1) + metrics_line_of(101) + b"\n" + encode_eos(0, 0)
    for cut in range(len(body) + 1):
        _frames, error = run_decoder(
            decoder_cls, split_at(body, [cut]), max_line_bytes=100
        )
        assert error == ProtocolError("line longer than the limit of 100 bytes", 2), cut


def test_long_line_is_rejected_before_its_end_arrives(decoder_cls: Any) -> None:
    decoder = decoder_cls(max_line_bytes=1000)
    decoder.feed(b"\n" + b"x" * 1000)
    with pytest.raises(ProtocolError) as caught:
        decoder.feed(b"y")
    assert caught.value == ProtocolError("line longer than the limit of 1000 bytes", 2)


def test_huge_piece_without_newline_fails_without_being_buffered(
    decoder_cls: Any,
) -> None:
    decoder = decoder_cls()
    with pytest.raises(
        ProtocolError, match="line longer than the limit of 4194304 bytes"
    ):
        decoder.feed(b"{" + b" " * (64 * 1024 * 1024))


def test_trailing_cr_may_wait_for_its_newline_at_the_limit(decoder_cls: Any) -> None:
    decoder = decoder_cls(max_line_bytes=100)
    assert decoder.feed(metrics_line_of(100) + b"\r") == []
    assert decoder.feed(b"\n") == [Metrics({"pad": "x" * 73})]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_line_bytes_must_be_a_positive_integer(decoder_cls: Any, bad: Any) -> None:
    with pytest.raises(ValueError, match="max_line_bytes must be a positive integer"):
        decoder_cls(max_line_bytes=bad)


@pytest.mark.parametrize("bad", [5, "text", None])
def test_feeding_something_that_is_not_bytes_is_a_type_error(
    decoder_cls: Any, bad: Any
) -> None:
    with pytest.raises(TypeError):
        decoder_cls().feed(bad)
