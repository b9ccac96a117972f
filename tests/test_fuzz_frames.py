"""Fuzzing both frame decoders with hostile bytes: no crash, bounded memory, identical results.

Complements tests/test_frames_property.py (which builds valid streams and corrupts them
in targeted ways) with input that owes nothing to the contract: random bytes, JSON-ish
token soup, and valid streams put through random mutations, each fed in random pieces.
The only exceptions allowed out of a decoder are ``ProtocolError`` and
``IncompleteStreamError`` (from ``close``); anything else is a crash and fails the test.
Both decoders must return equal frames, raise equal errors and report equal counters.

Runtime is bounded for CI (about 20 s on the 2-core box); fuzz/atheris_frames.py runs
the same oracle for as long as you like.
"""

from __future__ import annotations

import gc
from typing import Any

import psutil
import pytest
from _support_frames import DECODER_IDS, DECODERS, split_at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orpheus_trio.errors import IncompleteStreamError, ProtocolError
from orpheus_trio.protocol.rules import parse_line
from orpheus_trio.protocol.frames import (
    Chunk,
    ChunkLine,
    PythonFrameDecoder,
    encode_chunk,
    encode_eos,
    encode_error,
    encode_metrics,
)

FUZZ = settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

needs_two = pytest.mark.skipif(
    len(DECODERS) < 2, reason="orpheus_trio.protocol._fastframe is not built"
)


def outcome(
    cls: Any, pieces: list[bytes], max_line_bytes: int, *, relay: bool = False
) -> tuple[Any, ...]:
    """Everything observable about one decode: frames, error, counters."""
    decoder = cls(max_line_bytes=max_line_bytes, relay=relay)
    frames: list[Any] = []
    error: Any = None
    try:
        for piece in pieces:
            frames.extend(decoder.feed(piece))
        decoder.close()
    except ProtocolError as exc:
        error = exc
        # A failed decoder keeps failing with an equal error, never with another one.
        with pytest.raises(ProtocolError) as again:
            decoder.feed(b'{"type":"eos","chunks":0,"samples":0}\n')
        assert again.value == exc
    except IncompleteStreamError as exc:
        error = (type(exc), str(exc), exc.chunks_received)
    return (
        frames,
        error,
        decoder.finished,
        decoder.chunks_received,
        decoder.samples_received,
    )


def check(data: bytes, cuts: list[int], max_line_bytes: int) -> None:
    pieces = split_at(data, cuts)
    results = [outcome(cls, pieces, max_line_bytes) for cls in DECODERS]
    for other in results[1:]:
        assert other == results[0]
    # Feeding all at once or in pieces gives the same frames, error and counters:
    # every frame before the first bad line arrives, whatever the split.
    assert outcome(PythonFrameDecoder, [data], max_line_bytes) == results[0]
    # Relaying: the same checks, and each chunk's line holds that chunk's audio.
    relayed = [outcome(cls, pieces, max_line_bytes, relay=True) for cls in DECODERS]
    for other in relayed[1:]:
        assert other == relayed[0]
    assert_relays(results[0], relayed[0])


def assert_relays(decoded: tuple[Any, ...], relayed: tuple[Any, ...]) -> None:
    """A relaying decode is the decoding one with every Chunk as its plain line."""
    assert relayed[1:] == decoded[1:]  # the same error and counters
    assert len(relayed[0]) == len(decoded[0])
    for got, want in zip(relayed[0], decoded[0], strict=True):
        if isinstance(want, Chunk):
            assert isinstance(got, ChunkLine)
            assert (got.seq, got.samples) == (want.seq, len(want.pcm) // 2)
            assert got.line.endswith(b"\n") and got.line.count(b"\n") == 1
            assert got.line.startswith(b'{"type":"chunk","seq":%d,"audio":"' % want.seq)
            assert parse_line(got.line[:-1], 1) == want  # the same audio
        else:
            assert got == want


cuts_strategy = st.lists(st.integers(0, 4096), max_size=8)
limits = st.sampled_from([1, 7, 64, 4096, 4 * 1024 * 1024])


@given(data=st.binary(max_size=3000), cuts=cuts_strategy, limit=limits)
@FUZZ
def test_random_bytes(data: bytes, cuts: list[int], limit: int) -> None:
    check(data, cuts, limit)


TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\n",
    b"\r\n",
    b" ",
    b'"type"',
    b'"chunk"',
    b'"eos"',
    b'"error"',
    b'"metrics"',
    b'"seq"',
    b'"audio"',
    b'"chunks"',
    b'"samples"',
    b'"code"',
    b'"message"',
    b"0",
    b"1",
    b"-1",
    b"1e3",
    b"1.0",
    b"99999999999999999999999",
    b"true",
    b"null",
    b"NaN",
    b'"AAAA"',
    b'"AAA="',
    b'"AA=="',
    b'"A"',
    b'"////"',
    b'"\\u0041AAA"',
    b'"\\ud800"',
    b"\xff",
    b"\xc3\xa9",
    b'{"type":"chunk","seq":0,"audio":"AAAA"}\n',
    b'{"type":"eos","chunks":1,"samples":2}\n',
    b'{"type":"error","code":"x","message":"y"}\n',
]


@given(
    tokens=st.lists(st.sampled_from(TOKENS), max_size=60),
    cuts=cuts_strategy,
    limit=limits,
)
@FUZZ
def test_json_token_soup(tokens: list[bytes], cuts: list[int], limit: int) -> None:
    check(b"".join(tokens), cuts, limit)


@st.composite
def valid_stream(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 4))
    lines = [encode_metrics(queue_depth=draw(st.integers(0, 3)))]
    samples = 0
    for seq in range(n):
        pcm = draw(st.binary(max_size=40))
        pcm = pcm[: len(pcm) // 2 * 2]
        samples += len(pcm) // 2
        lines.append(encode_chunk(seq, pcm))
    if draw(st.booleans()):
        lines.append(encode_eos(n, samples))
    else:
        lines.append(encode_error("engine_error", draw(st.text(max_size=10))))
    return b"".join(lines)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_stream()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup", "cut"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "dup":
            end = min(len(data), at + draw(st.integers(1, 60)))
            data[end:end] = data[at:end]
        else:
            del data[at:]
    return bytes(data)


@given(data=mutated(), cuts=cuts_strategy, limit=st.sampled_from([16, 4096, 1 << 22]))
@FUZZ
def test_mutated_valid_streams(data: bytes, cuts: list[int], limit: int) -> None:
    check(data, cuts, limit)


# -- memory stays bounded ---------------------------------------------------------------


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


@pytest.mark.parametrize("cls", DECODERS, ids=DECODER_IDS)
def test_a_line_without_end_is_refused_once_it_passes_the_limit(cls: Any) -> None:
    """64 MiB with no newline: refused after limit + one piece, memory does not follow."""
    limit, piece = 1 << 20, b"A" * 65536
    decoder = cls(max_line_bytes=limit)
    before = rss()
    fed = 0
    with pytest.raises(ProtocolError, match="longer than the limit"):
        for _ in range(1024):
            decoder.feed(piece)
            fed += len(piece)
    assert fed <= limit
    assert rss() - before < 16 << 20


@pytest.mark.parametrize("cls", DECODERS, ids=DECODER_IDS)
def test_many_long_lines_do_not_accumulate(cls: Any) -> None:
    """200 lines just under a 1 MiB limit, fed in odd pieces: memory stays flat."""
    limit = 1 << 20
    line = b" " * (limit - 1) + b"\n"  # blank lines: parsed, skipped
    decoder = cls(max_line_bytes=limit)
    before = rss()
    for _ in range(200):
        for piece in split_at(line, [1, 4097, 700001]):
            assert decoder.feed(piece) == []
    decoder.feed(encode_eos(0, 0))
    decoder.close()
    assert rss() - before < 16 << 20
