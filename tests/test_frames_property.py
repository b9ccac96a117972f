"""Property tests: the Cython and Python decoders agree on every stream, split anywhere.

Streams are generated valid (and must decode to the frames they were built from)
and then corrupted (byte flips, insertions, deletions, wrong seq and totals,
lines in every JSON spelling the fast path must not misread). Both decoders get
the same pieces; their frames, errors and counters must be equal. A bad line
never costs the frames before it: whatever the split, every frame before the
first bad line arrives, then the error (split-independence).
"""

from __future__ import annotations

import json
from typing import Any

import pybase64
import pytest
from _support_frames import DECODERS, run_decoder, split_at
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orpheus_trio.errors import IncompleteStreamError, ProtocolError
from orpheus_trio.protocol.rules import parse_line
from orpheus_trio.protocol.frames import (
    Chunk,
    ChunkLine,
    EndOfStream,
    ErrorFrame,
    Frame,
    Metrics,
    PythonFrameDecoder,
    encode_chunk,
    encode_eos,
    encode_error,
    encode_metrics,
)

PROPERTY_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

needs_cython = pytest.mark.skipif(
    len(DECODERS) < 2, reason="orpheus_trio.protocol._fastframe is not built in this environment"
)

# Bytes that make corruptions interesting to a JSON and base64 reader.
NASTY = st.binary(min_size=1, max_size=6) | st.lists(
    st.sampled_from(list(b'{}[]":,\\\n\r \t0159-eE.=/+Aaz\xc3\xff')),
    min_size=1,
    max_size=6,
).map(bytes)

pcm_strategy = st.binary(max_size=48).map(lambda b: b[: len(b) // 2 * 2]) | st.integers(
    250, 3000
).map(lambda samples: bytes(i % 251 for i in range(2 * samples)))
text_strategy = st.text(
    alphabet=st.sampled_from('ab{}[]":,\\/ \u00e9\u2028'), max_size=8
)


@st.composite
def chunk_line(draw: st.DrawFn, seq: int, pcm: bytes) -> bytes:
    """One chunk line (no terminator), in the plain form or another valid JSON spelling."""
    audio = pybase64.b64encode(pcm).decode()
    style = draw(
        st.sampled_from(
            ["plain", "reordered", "spaced", "escaped", "extra", "key_escape", "dup"]
        )
    )
    if style == "plain":
        return encode_chunk(seq, pcm).rstrip(b"\n")
    if style == "reordered":
        return json.dumps({"audio": audio, "seq": seq, "type": "chunk"}).encode()
    if style == "spaced":
        return json.dumps({"type": "chunk", "seq": seq, "audio": audio}).encode()
    if style == "escaped":
        escaped = audio.replace("/", "\\/").replace("+", "\\u002b")
        return b'{"type":"chunk","seq":%d,"audio":"%s"}' % (seq, escaped.encode())
    if style == "extra":
        extra = json.dumps(draw(text_strategy)).encode()
        return b'{"type":"chunk","seq":%d,"audio":"%s","note":%s}' % (
            seq,
            audio.encode(),
            extra,
        )
    if style == "key_escape":
        return b'{"type":"chunk","seq":%d,"\\u0061udio":"%s"}' % (seq, audio.encode())
    return b'{"type":"chunk","seq":%d,"audio":"AAAA","audio":"%s"}' % (
        seq,
        audio.encode(),
    )


@st.composite
def valid_streams(draw: st.DrawFn, mistakes: bool = False) -> tuple[bytes, list[Frame]]:
    """A body that keeps the contract, and the frames it must decode to.

    With ``mistakes``, some lines break a stream rule instead (seq, totals, base64,
    odd audio, data after the end); the frames returned are then meaningless.
    """

    def slip(values: list[int]) -> int:
        return draw(st.sampled_from([0, 0, 0, *values])) if mistakes else 0

    terminator = draw(st.sampled_from([b"\n", b"\r\n"]))
    lines: list[bytes] = []
    frames: list[Frame] = []
    chunks = samples = 0
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["chunk", "chunk", "metrics", "blank", "unknown"]))
        if kind == "chunk":
            pcm = draw(pcm_strategy)
            line = draw(chunk_line(chunks + slip([1, -1, 2]), pcm))
            if slip([1]) and pcm:
                line = line.replace(b'"}', b'/"}' if slip([1]) else b'A"}')
            if slip([1]):
                audio = pybase64.b64encode(pcm + b"\x01")
                line = b'{"type":"chunk","seq":%d,"audio":"%s"}' % (chunks, audio)
            lines.append(line)
            frames.append(Chunk(chunks, pcm))
            chunks += 1
            samples += len(pcm) // 2
        elif kind == "metrics":
            depth = draw(st.integers(0, 100))
            lines.append(encode_metrics(queue_depth=depth).rstrip(b"\n"))
            frames.append(Metrics({"queue_depth": depth}))
        elif kind == "blank":
            lines.append(draw(st.sampled_from([b"", b" ", b"\t \r"])))
        else:
            lines.append(b'{"type":"later","chunk":{"seq":1}}')
    if draw(st.booleans()):
        lines.append(
            encode_eos(chunks + slip([1, -1]), samples + slip([1, -1])).rstrip(b"\n")
        )
        frames.append(EndOfStream(chunks, samples))
    else:
        code, message = (
            draw(st.sampled_from(["internal", "cancelled"])),
            draw(text_strategy),
        )
        lines.append(encode_error(code, message).rstrip(b"\n"))
        frames.append(ErrorFrame(code, message))
    if slip([1]):
        lines.append(draw(st.sampled_from([b"x", b'{"type":"metrics"}', b"  {"])))
    body = b"".join(line + terminator for line in lines)
    return body, frames


@st.composite
def corrupted_streams(draw: st.DrawFn) -> bytes:
    """A valid body with a few random edits: most break the contract somewhere."""
    body, _ = draw(valid_streams(mistakes=True))
    data = bytearray(body)
    for _ in range(draw(st.integers(0, 2))):
        edit = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        at = draw(st.integers(0, len(data)))
        if edit == "flip" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif edit == "insert":
            data[at:at] = draw(NASTY)
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif edit == "truncate":
            del data[at:]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 80))]
    return bytes(data)


def cuts_for(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(data)), max_size=6)


def outcome(cls: Any, pieces: list[bytes], **kwargs: Any) -> tuple[Any, ...]:
    """Everything observable about one run: frames, error and the counters."""
    decoder = cls(**kwargs)
    frames: list[Frame] = []
    error: ProtocolError | IncompleteStreamError | None = None
    try:
        for piece in pieces:
            frames.extend(decoder.feed(piece))
        decoder.close()
    except ProtocolError as exc:
        error = exc
    except IncompleteStreamError as exc:
        return (frames, "incomplete", str(exc), exc.chunks_received, *counters(decoder))
    return (frames, error, *counters(decoder))


def counters(decoder: Any) -> tuple[bool, int, int]:
    return (decoder.finished, decoder.chunks_received, decoder.samples_received)


def error_of(result: tuple[Any, ...]) -> Any:
    return result[1:3] if result[1] == "incomplete" else result[1]


limit_strategy = st.sampled_from([4 * 1024 * 1024, 40, 90, 200])


@pytest.mark.parametrize("cls", DECODERS, ids=[c.__name__ for c in DECODERS])
@PROPERTY_SETTINGS
@given(data=st.data(), stream=valid_streams())
def test_valid_streams_decode_to_their_frames_however_split(
    cls: Any, data: st.DataObject, stream: tuple[bytes, list[Frame]]
) -> None:
    body, expected = stream
    pieces = split_at(body, data.draw(cuts_for(body)))
    assert run_decoder(cls, pieces) == (expected, None)


@needs_cython
@PROPERTY_SETTINGS
@given(data=st.data(), body=corrupted_streams(), limit=limit_strategy)
def test_decoders_agree_on_corrupted_streams(
    data: st.DataObject, body: bytes, limit: int
) -> None:
    pieces = split_at(body, data.draw(cuts_for(body)))
    python, fast = DECODERS
    assert outcome(fast, pieces, max_line_bytes=limit) == outcome(
        python, pieces, max_line_bytes=limit
    )


@needs_cython
@PROPERTY_SETTINGS
@given(data=st.data(), stream=valid_streams(), limit=limit_strategy)
def test_decoders_agree_on_valid_streams_under_any_line_limit(
    data: st.DataObject, stream: tuple[bytes, list[Frame]], limit: int
) -> None:
    body, _ = stream
    pieces = split_at(body, data.draw(cuts_for(body)))
    python, fast = DECODERS
    assert outcome(fast, pieces, max_line_bytes=limit) == outcome(
        python, pieces, max_line_bytes=limit
    )


def sticky_outcome(cls: Any, pieces: list[bytes], limit: int) -> tuple[Any, ...]:
    """``outcome``, checking that a failed decoder keeps raising the equal error."""
    decoder = cls(max_line_bytes=limit)
    frames: list[Frame] = []
    try:
        for piece in pieces:
            frames.extend(decoder.feed(piece))
        decoder.close()
    except ProtocolError as exc:
        for again in (lambda: decoder.feed(b""), decoder.close):
            with pytest.raises(ProtocolError) as repeated:
                again()
            assert repeated.value == exc
        return (frames, exc, *counters(decoder))
    except IncompleteStreamError as exc:
        return (frames, "incomplete", str(exc), exc.chunks_received, *counters(decoder))
    return (frames, None, *counters(decoder))


@pytest.mark.parametrize("cls", DECODERS, ids=[c.__name__ for c in DECODERS])
@PROPERTY_SETTINGS
@given(data=st.data(), body=corrupted_streams(), limit=limit_strategy)
def test_what_arrives_before_the_error_does_not_depend_on_the_split(
    cls: Any, data: st.DataObject, body: bytes, limit: int
) -> None:
    """Split-independence: every frame before the first bad line arrives, then its error.

    Two different splits of one body give the same frames (all of them, in order),
    the same error and the same counters; so does the body fed in one piece, whose
    frames are exactly those of the lines before the bad one.
    """
    first = split_at(body, data.draw(cuts_for(body), label="first cuts"))
    second = split_at(body, data.draw(cuts_for(body), label="second cuts"))
    assume(first != second)
    whole = sticky_outcome(PythonFrameDecoder, [body], limit)
    assert sticky_outcome(cls, first, limit) == whole
    assert sticky_outcome(cls, second, limit) == whole


def relayed_as_decoded(result: tuple[Any, ...]) -> tuple[Any, ...]:
    """A relaying run's outcome with each ChunkLine read back into its Chunk."""
    frames = []
    for frame in result[0]:
        if isinstance(frame, ChunkLine):
            assert frame.line.startswith(b'{"type":"chunk","seq":%d,' % frame.seq)
            chunk = parse_line(frame.line.removesuffix(b"\n"), 1)
            assert isinstance(chunk, Chunk) and len(chunk.pcm) // 2 == frame.samples
            frames.append(chunk)
        else:
            frames.append(frame)
    return (frames, *result[1:])


@pytest.mark.parametrize("cls", DECODERS, ids=[c.__name__ for c in DECODERS])
@PROPERTY_SETTINGS
@given(data=st.data(), body=corrupted_streams(), limit=limit_strategy)
def test_relaying_checks_what_decoding_checks_and_hands_on_the_same_audio(
    cls: Any, data: st.DataObject, body: bytes, limit: int
) -> None:
    """A relaying decoder accepts and refuses exactly what the decoding one does,
    at the same line, and each line it hands on holds that chunk's audio."""
    pieces = split_at(body, data.draw(cuts_for(body)))
    relayed = outcome(cls, pieces, max_line_bytes=limit, relay=True)
    assert relayed_as_decoded(relayed) == outcome(
        PythonFrameDecoder, pieces, max_line_bytes=limit
    )
    assert not any(isinstance(frame, Chunk) for frame in relayed[0])


@needs_cython
@PROPERTY_SETTINGS
@given(data=st.data(), body=corrupted_streams(), limit=limit_strategy)
def test_decoders_relay_the_same_lines(
    data: st.DataObject, body: bytes, limit: int
) -> None:
    pieces = split_at(body, data.draw(cuts_for(body)))
    python, fast = DECODERS
    assert outcome(fast, pieces, max_line_bytes=limit, relay=True) == outcome(
        python, pieces, max_line_bytes=limit, relay=True
    )


@pytest.mark.parametrize("cls", DECODERS, ids=[c.__name__ for c in DECODERS])
def test_a_plain_line_is_relayed_byte_for_byte_and_others_in_the_plain_form(
    cls: Any,
) -> None:
    pcm = bytes(range(200))
    plain = encode_chunk(0, pcm)
    # Non-zero unused bits in the last base64 digit: still the plain form, kept as it is.
    odd_bits = b'{"type":"chunk","seq":1,"audio":"AAD="}'
    spaced = b'{"type": "chunk", "seq": 2, "audio": "%s", "note": 1}' % (
        pybase64.b64encode(pcm)
    )
    body = plain + odd_bits + b"\r\n" + spaced + b"\n"
    frames = cls(relay=True).feed(body)
    assert frames == [
        ChunkLine(0, plain, 100),
        ChunkLine(1, odd_bits + b"\n", 1),
        ChunkLine(2, encode_chunk(2, pcm), 100),
    ]
