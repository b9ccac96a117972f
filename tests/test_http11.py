"""Sans-IO HTTP/1.1 pieces: chunked decoding under any split, heads, framing, requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orpheus_trio._http.h1 import (
    MAX_CHUNK_SIZE_LINE_BYTES,
    MAX_CHUNK_SIZE,
    MAX_HEAD_BYTES,
    ChunkedDecoder,
    Framing,
    H1ProtocolError,
    body_framing,
    encode_request,
    find_head_end,
    parse_response_head,
)


def reference_decode(data: bytes) -> tuple[bytes, bytes]:
    """A plain reading of RFC 9112 7.1 on the whole input: (body, bytes after the end)."""
    body, pos = b"", 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            break
        body += data[pos : pos + size]
        assert data[pos + size : pos + size + 2] == b"\r\n"
        pos += size + 2
    while True:  # trailer fields up to a blank line
        eol = data.index(b"\r\n", pos)
        blank = eol == pos
        pos = eol + 2
        if blank:
            return body, data[pos:]


def encode_chunked(
    chunks: list[bytes], extensions: list[bytes], trailers: list[bytes], upper: bool
) -> bytes:
    out = b""
    for i, chunk in enumerate(chunks):
        size = b"%X" if upper else b"%x"
        ext = extensions[i % len(extensions)] if extensions else b""
        out += size % len(chunk) + ext + b"\r\n" + chunk + b"\r\n"
    out += b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
    return out


def feed_split(data: bytes, cuts: list[int]) -> tuple[bytes, bytes, ChunkedDecoder]:
    decoder = ChunkedDecoder()
    body, after = b"", b""
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        piece = data[start:cut]
        start = cut
        got, rest = decoder.feed(piece)
        body += got
        after += rest
    return body, after, decoder


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=12),
    extensions=st.lists(
        st.sampled_from([b"", b";a=1", b"; name", b' ;q="x"']), max_size=3
    ),
    trailers=st.lists(
        st.sampled_from([b"X-Checksum: 1", b"Expires: never"]), max_size=2
    ),
    upper=st.booleans(),
    extra=st.binary(max_size=20),
    data=st.data(),
)
def test_any_split_decodes_like_the_reference(
    chunks: list[bytes],
    extensions: list[bytes],
    trailers: list[bytes],
    upper: bool,
    extra: bytes,
    data: st.DataObject,
) -> None:
    wire = encode_chunked(chunks, extensions, trailers, upper) + extra
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    body, after, decoder = feed_split(wire, cuts)
    assert (body, after) == reference_decode(wire) == (b"".join(chunks), extra)
    assert decoder.done


@settings(max_examples=100, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=8),
    data=st.data(),
)
def test_not_done_until_the_blank_line_after_the_last_chunk(
    chunks: list[bytes], data: st.DataObject
) -> None:
    wire = encode_chunked(chunks, [], [], False)
    cut = data.draw(st.integers(0, len(wire) - 1))
    decoder = ChunkedDecoder()
    body, after = decoder.feed(wire[:cut])
    assert not decoder.done and after == b""
    assert b"".join(chunks).startswith(body)


def test_many_chunks_in_one_piece_come_out_as_one_piece() -> None:
    wire = encode_chunked([b"a" * 100] * 50, [], [], False)
    body, after = ChunkedDecoder().feed(wire)
    assert body == b"a" * 5000 and after == b""


def test_data_after_the_end_is_returned_not_decoded() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1") == (b"abc", b"HTTP/1.1")
    assert decoder.feed(b" 200") == (b"", b" 200")


@pytest.mark.parametrize(
    "size_line",
    [
        b"g",
        b"-1",
        b" 1",
        b"0x10",
        b"1_0",
        b"+1",
        b"",
        b";ext",
        b"1" * 17,
        b"\xff",
        b"1\t2",
    ],
)
def test_malformed_chunk_size_is_a_protocol_error(size_line: bytes) -> None:
    with pytest.raises(H1ProtocolError, match="chunk size"):
        ChunkedDecoder().feed(size_line + b"\r\nabc\r\n0\r\n\r\n")


def test_malformed_chunk_size_is_caught_when_split() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"1") == (b"", b"")
    with pytest.raises(H1ProtocolError, match="chunk size"):
        decoder.feed(b"z\r\n")


@pytest.mark.parametrize("wire", [b"3\r\nabcXY", b"3\r\nabc\rX", b"3\r\nabc\n"])
def test_chunk_data_must_end_in_crlf(wire: bytes) -> None:
    with pytest.raises(H1ProtocolError, match="CRLF"):
        ChunkedDecoder().feed(wire)


def test_endless_size_line_is_refused() -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(H1ProtocolError, match="too long"):
        for _ in range(MAX_CHUNK_SIZE_LINE_BYTES + 2):
            decoder.feed(b"1")


def test_endless_trailers_are_refused() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"0\r\n")
    with pytest.raises(H1ProtocolError, match="trailer"):
        for _ in range(1000):
            decoder.feed(b"X-Junk: " + b"y" * 100 + b"\r\n")


#: What a strict parser (h11, llhttp) refuses in a chunked body, each followed by a
#: well-formed rest, so only the refused form can fail it: the request-smuggling
#: classes a proxy in front and this client could frame differently.
REFUSED_BODIES = {
    "chunk extension ending in a bare LF": b"5;\nX\r\nhello\r\n0\r\n\r\n",
    "chunk extension with a bare CR": b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    "chunk extension with a NUL": b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
    "trailer field line ending in a bare LF": b"0\r\nX-A: 1\nX-B: 2\r\n\r\n",
    "trailer section ending in a bare LF": b"0\r\nX-A: 1\r\n\n\r\n",
    "trailer with a NUL": b"0\r\nX-A: a\x00b\r\n\r\n",
    "trailer with a bare CR": b"0\r\nX-A: a\rb\r\n\r\n",
    "trailer with DEL": b"0\r\nX-A: a\x7fb\r\n\r\n",
    "trailer without a colon": b"0\r\nno colon\r\n\r\n",
    "trailer folded onto the last line": b"0\r\nX-A: 1\r\n folded\r\n\r\n",
    "chunk size past 2**63 - 1": b"%x\r\nhello\r\n0\r\n\r\n" % (MAX_CHUNK_SIZE + 1),
    "chunk size of 17 hex digits": b"1" * 17 + b"\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("form", REFUSED_BODIES)
@pytest.mark.parametrize("split", ["whole", "byte by byte"])
def test_strictly_refused_chunked_forms(form: str, split: str) -> None:
    wire = REFUSED_BODIES[form]
    decoder = ChunkedDecoder()
    pieces = [wire] if split == "whole" else [wire[i : i + 1] for i in range(len(wire))]
    with pytest.raises(H1ProtocolError):
        for piece in pieces:
            decoder.feed(piece)
    assert not decoder.done


def test_the_largest_chunk_size_and_good_extensions_and_trailers_pass() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"%x\r\n" % MAX_CHUNK_SIZE) == (b"", b"")
    wire = b"5 ;name=value;\tother=\"q s\"\r\nhello\r\n0\r\nX-A: 1\r\nX-B:\t2\r\n\r\nNEXT"
    assert ChunkedDecoder().feed(wire) == (b"hello", b"NEXT")


# -- response heads -------------------------------------------------------------------

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
    b"X-Queue-Depth:3\r\nSet-Thing: a\r\nset-thing: b\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def test_head_parses_with_case_insensitive_headers() -> None:
    head = parse_response_head(HEAD)
    assert (head.status, head.reason, head.http_version) == (200, "OK", "HTTP/1.1")
    assert head.headers["content-type"] == "application/x-ndjson"
    assert head.headers["X-QUEUE-DEPTH"] == "3"
    assert head.headers.get("x-queue-depth") == "3" and "X-Queue-Depth" in head.headers
    assert head.headers["set-thing"] == "a, b"
    assert head.headers.get("missing") is None
    assert dict(head.headers.items())["transfer-encoding"] == "chunked"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 099 Below 100\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
    ],
)
def test_malformed_head_is_a_protocol_error(head: bytes) -> None:
    with pytest.raises(H1ProtocolError, match="malformed"):
        parse_response_head(head)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\n\r\n",  # a bare LF ends a field early
        b"HTTP/1.1 200 OK\r\nA: 1\rB: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: a\x1bb\r\n\r\n",
        b"HTTP/1.1 200 O\nK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nTRANSFER-ENCODING: gzip\r\n\r\n",
    ],
)
def test_strictly_refused_head_forms(head: bytes) -> None:
    with pytest.raises(H1ProtocolError, match="control character|repeated"):
        parse_response_head(head)


def test_a_tab_inside_a_field_value_is_fine() -> None:
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nA: x\ty\r\n\r\n").headers["a"] == "x\ty"


def test_head_end_is_found_across_reads_and_bounded() -> None:
    buffer = b"HTTP/1.1 200 OK\r\nA: b\r\n\r"
    assert find_head_end(buffer) == -1
    buffer += b"\nbody"
    assert find_head_end(buffer, len(buffer) - 5) == len(buffer) - 4
    with pytest.raises(H1ProtocolError, match="larger than"):
        find_head_end(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD_BYTES // 6))
    huge = b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_HEAD_BYTES + b"\r\n\r\n"
    with pytest.raises(H1ProtocolError, match="larger than"):
        find_head_end(huge)


@pytest.mark.parametrize(
    ("head", "framing", "length", "keep_alive"),
    [
        (HEAD, Framing.CHUNKED, 0, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", Framing.LENGTH, 12, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", Framing.LENGTH, 5, True),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Close\r\n\r\n",
            Framing.LENGTH,
            5,
            False,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", Framing.UNTIL_CLOSE, 0, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Framing.LENGTH, 1, False),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            Framing.LENGTH,
            1,
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", Framing.EMPTY, 0, True),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            Framing.EMPTY,
            0,
            True,
        ),
        # Both: chunked wins, and RFC 9112 6.3 says close the connection after
        # it (the two may disagree on where the body ends: request smuggling).
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            Framing.CHUNKED,
            0,
            False,
        ),
    ],
)
def test_body_framing(
    head: bytes, framing: Framing, length: int, keep_alive: bool
) -> None:
    got = body_framing(parse_response_head(head))
    assert (got.framing, got.length, got.keep_alive) == (framing, length, keep_alive)


@pytest.mark.parametrize(
    "fields",
    [
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: identity",
        b"Content-Length: -1",
        b"Content-Length: 5, 6",
        b"Content-Length: 0x10",
        b"Content-Length: 1" + b"0" * 20,
    ],
)
def test_unusable_framing_is_a_protocol_error(fields: bytes) -> None:
    head = parse_response_head(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n\r\n")
    with pytest.raises(H1ProtocolError):
        body_framing(head)


# -- requests ---------------------------------------------------------------------------


def test_request_is_one_buffer_with_our_host_and_length() -> None:
    wire = encode_request(
        "POST",
        "/v1/tts/stream",
        "example.com:8080",
        {"Content-Type": "application/json", "Host": "evil", "Content-Length": "1"},
        b'{"text":"hi"}',
    )
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/tts/stream HTTP/1.1"
    assert sorted(lines[1:]) == [
        b"Content-Length: 13",
        b"Content-Type: application/json",
        b"Host: example.com:8080",
    ]
    assert body == b'{"text":"hi"}'


@pytest.mark.parametrize(
    ("headers", "target"),
    [
        ({"X-Id": "a\r\nInjected: yes"}, "/p"),
        ({"X-Id": "a\nb"}, "/p"),
        ({"Bad Name": "x"}, "/p"),
        ({"Bad:Name": "x"}, "/p"),
        ({}, "/p HTTP/1.1\r\nX: y"),
    ],
)
def test_request_refuses_header_injection(headers: dict[str, str], target: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        encode_request("POST", target, "h", headers, b"")


# -- any bytes at all: a result or RemoteProtocolError, nothing else -----------------------


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.binary(max_size=40), max_size=8))
def test_arbitrary_bytes_never_escape_as_another_error(pieces: list[bytes]) -> None:
    decoder = ChunkedDecoder()
    try:
        for piece in pieces:
            body, after = decoder.feed(piece)
            assert isinstance(body, bytes) and isinstance(after, bytes)
    except H1ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    head=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda fields: b"HTTP/1.1 200 OK\r\n" + b"\r\n".join(fields) + b"\r\n\r\n",
            st.lists(st.binary(max_size=30), max_size=5),
        ),
    )
)
def test_arbitrary_heads_never_escape_as_another_error(head: bytes) -> None:
    try:
        parsed = parse_response_head(head)
        body_framing(parsed)
    except H1ProtocolError:
        pass


def test_request_header_outside_latin1_is_refused_without_echoing_other_headers() -> (
    None
):
    secret = "sk-very-secret-key"
    with pytest.raises(ValueError, match="X-Request-Id") as caught:
        encode_request(
            "POST",
            "/p",
            "h",
            {"Authorization": f"Bearer {secret}", "X-Request-Id": "r\u2028"},
            b"",
        )
    error: BaseException | None = caught.value
    while error is not None:  # the message, its repr and every chained error
        assert secret not in repr(error) and secret not in str(error)
        error = error.__cause__ or error.__context__
