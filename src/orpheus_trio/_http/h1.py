"""Sans-IO HTTP/1.1 client pieces: the request head, the response head, body framing, chunked decoding.

No sockets here: :mod:`~orpheus_trio._http.pool` drives these with bytes read
in large pieces. The chunked decoder turns whatever arrived (any split, many
HTTP chunks at once) into one piece of body bytes, so the layer above wakes
once per read, not once per HTTP chunk.

Framing is read as strictly as h11 and llhttp read it: a bare CR or LF where a
line must end in CRLF, a control character in a field or a chunk extension, an
obs-folded line, a chunk size past 2**63 - 1 or a repeated ``Transfer-Encoding``
is refused, never guessed at (the forms a proxy in front and this client could
frame differently). Malformed input raises :class:`H1ProtocolError`; the pool
turns it into ``httpx.RemoteProtocolError`` (the public type for a peer that
broke HTTP), with the request attached.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "H1ProtocolError",
    "MAX_CHUNK_SIZE",
    "MAX_CHUNK_SIZE_LINE_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_TRAILER_BYTES",
    "BodyFraming",
    "ChunkedDecoder",
    "Framing",
    "ResponseHead",
    "ResponseHeaders",
    "body_framing",
    "encode_request",
    "find_head_end",
    "parse_response_head",
]

#: Longest response head (status line and headers) accepted.
MAX_HEAD_BYTES = 64 * 1024
#: Longest chunk-size line (hex size and extensions) accepted.
MAX_CHUNK_SIZE_LINE_BYTES = 1024
#: Longest trailer section accepted after the last chunk.
MAX_TRAILER_BYTES = 16 * 1024
#: The largest chunk size accepted (a signed 64-bit count, as llhttp and h11 cap it).
MAX_CHUNK_SIZE = 2**63 - 1
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_TOKEN_FORBIDDEN = frozenset(" \t\r\n:\x00")
#: Control characters (HTAB excepted): never inside a field, a chunk extension or a trailer.
_CTL = bytes(c for c in range(0x20) if c != 0x09) + b"\x7f"
_CTL_BUT_CR_LF = _CTL.replace(b"\r", b"").replace(b"\n", b"")


class H1ProtocolError(Exception):
    """The peer broke HTTP/1.1 framing (the sans-IO layer's own error type)."""


def _protocol_error(message: str) -> H1ProtocolError:
    return H1ProtocolError(message)


# -- the request -------------------------------------------------------------------


def encode_request(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """The whole request (head and body) as bytes, ready for one ``send_all``.

    ``Host`` and ``Content-Length`` are ours to set; a CR, LF or NUL in a name or
    value raises ``ValueError`` (no header injection), as does text outside latin-1.
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in ("host", "content-length", "transfer-encoding"):
            continue
        if not name or any(c in _TOKEN_FORBIDDEN for c in name):
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value or "\x00" in value:
            raise ValueError(f"invalid value for header {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    if any(c in target for c in " \r\n\x00"):
        raise ValueError(f"invalid request target {target!r}")
    head = "\r\n".join(lines)
    try:
        return head.encode("latin-1") + body
    except UnicodeEncodeError as error:
        bad_line = head[: error.start].rpartition("\r\n")[2]
    # Raised outside the handler: the UnicodeEncodeError holds the whole head, API key
    # included, and must not ride along as this error's context.
    if bad_line.startswith(method + " "):
        raise ValueError(f"invalid request target {target!r}: not latin-1")
    raise ValueError(
        f"invalid value for header {bad_line.partition(':')[0]!r}: not latin-1"
    )


# -- the response head -------------------------------------------------------------


class ResponseHeaders(Mapping[str, str]):
    """Response headers with case-insensitive lookups; repeated fields joined by ``", "``."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields  # keys lower-cased

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._fields.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._fields!r})"


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    http_version: str
    headers: ResponseHeaders


def find_head_end(buffer: bytes, start: int = 0) -> int:
    """Index just past the blank line ending the head, or -1; raises past :data:`MAX_HEAD_BYTES`."""
    end = buffer.find(b"\r\n\r\n", max(0, start - 3))
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise _protocol_error(f"response head larger than {MAX_HEAD_BYTES} bytes")
        return -1
    if end + 4 > MAX_HEAD_BYTES:
        raise _protocol_error(f"response head larger than {MAX_HEAD_BYTES} bytes")
    return end + 4


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse ``head`` (status line and fields, the final blank line optional)."""
    crlf = head.count(b"\r\n")
    if (
        len(head.translate(None, _CTL_BUT_CR_LF)) != len(head)
        or head.count(b"\r") != crlf
        or head.count(b"\n") != crlf
    ):
        # A bare CR or LF (a line end some parser honours and another does not),
        # a NUL or another control character.
        raise _protocol_error("control character or bare CR/LF in the response head")
    text = head.decode("latin-1")
    lines = text.rstrip("\r\n").split("\r\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    # A code below 100 is no status; taken for a 1xx, the client would wait for another head.
    if (
        version not in ("HTTP/1.1", "HTTP/1.0")
        or len(code) != 3
        or not code.isdigit()
        or not code.isascii()
        or code[0] == "0"
    ):
        raise _protocol_error(f"malformed status line {status_line[:100]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or any(c in _TOKEN_FORBIDDEN for c in name):
            raise _protocol_error(f"malformed header line {line[:100]!r}")
        name = name.lower()
        value = value.strip(" \t")
        if name == "transfer-encoding" and name in fields:
            # Which one counts is where two parsers part ways: refuse, as h11 does.
            raise _protocol_error("Transfer-Encoding repeated")
        if name in fields:
            fields[name] = f"{fields[name]}, {value}"
        else:
            fields[name] = value
    return ResponseHead(int(code), reason, version, ResponseHeaders(fields))


# -- body framing ------------------------------------------------------------------


class Framing(Enum):
    EMPTY = "empty"
    CHUNKED = "chunked"
    LENGTH = "length"
    UNTIL_CLOSE = "until close"


@dataclass(frozen=True, slots=True)
class BodyFraming:
    """How the body ends, and whether the connection may carry another request after it."""

    framing: Framing
    length: int = 0
    keep_alive: bool = True


def body_framing(head: ResponseHead, *, request_method: str = "POST") -> BodyFraming:
    """RFC 9112 section 6.3, for the responses a client of ours can get."""
    headers = head.headers
    connection = headers.get("connection", "") or ""
    tokens = {t.strip().lower() for t in connection.split(",")}
    keep_alive = (
        "close" not in tokens
        if head.http_version == "HTTP/1.1"
        else "keep-alive" in tokens
    )
    if request_method == "HEAD" or head.status in (204, 304) or head.status < 200:
        return BodyFraming(Framing.EMPTY, keep_alive=keep_alive)
    coding = headers.get("transfer-encoding")
    if coding is not None:
        codings = [c.strip().lower() for c in coding.split(",")]
        if codings != ["chunked"]:
            raise _protocol_error(f"unsupported transfer-encoding {coding!r}")
        # With a Content-Length too, something on the path may have framed the
        # body differently (section 6.3, item 3): never reuse the connection.
        framed_twice = "content-length" in headers
        return BodyFraming(Framing.CHUNKED, keep_alive=keep_alive and not framed_twice)
    length = headers.get("content-length")
    if length is not None:
        values = {v.strip() for v in length.split(",")}
        value = values.pop()
        if values or not value.isdigit() or not value.isascii() or len(value) > 18:
            raise _protocol_error(f"malformed content-length {length!r}")
        return BodyFraming(Framing.LENGTH, int(value), keep_alive=keep_alive)
    return BodyFraming(Framing.UNTIL_CLOSE, keep_alive=False)


# -- chunked transfer coding -------------------------------------------------------

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


def _chunk_size(line: bytes) -> int:
    size, semicolon, extension = line.partition(b";")
    size = size.rstrip(b" \t")
    if not size or size.translate(None, _HEX_DIGITS):
        raise _protocol_error(f"malformed chunk size line {line[:40]!r}")
    if semicolon and len(extension.translate(None, _CTL)) != len(extension):
        # Most often a bare LF ending the extension early: ``5;\nX\r\n``.
        raise _protocol_error("control character or bare CR/LF in a chunk extension")
    value = int(size, 16)
    if value > MAX_CHUNK_SIZE:
        raise _protocol_error("chunk size overflows")
    return value


def _check_trailer_field(line: bytes) -> None:
    """One trailer field line (without its CRLF): ``name: value``, as a header is."""
    name, colon, value = line.partition(b":")
    if len(line.translate(None, _CTL)) != len(line):
        raise _protocol_error("control character or bare CR/LF in a chunked trailer")
    if not colon or not name or any(c in b" \t" for c in name):
        # A space before the colon, or a line folded onto the last one (obs-fold).
        raise _protocol_error("malformed chunked trailer field")


class ChunkedDecoder:
    """Undoes ``Transfer-Encoding: chunked``, fed any split of the body.

    ``feed`` returns the body bytes in the piece (joined across HTTP chunks)
    and, once the last chunk and trailers are in, whatever came after them.
    """

    __slots__ = ("_pending", "_remaining", "_state", "_trailer_bytes")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._pending = b""  # an unfinished size line, chunk end or trailer line
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        """Whether the last chunk and the trailer section have been read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Decode ``data``; return ``(body bytes, bytes after the end of the body)``."""
        if self._state == _DONE:
            return b"", data
        if self._pending:
            data = self._pending + data
            self._pending = b""
        out: list[bytes] = []
        pos, end = 0, len(data)
        state, remaining = self._state, self._remaining
        while pos < end:
            if state == _DATA:
                if pos == 0 and remaining >= end:
                    out.append(data)  # the whole piece is chunk data: no copy
                    remaining -= end
                    pos = end
                else:
                    stop = min(end, pos + remaining)
                    out.append(data[pos:stop])
                    remaining -= stop - pos
                    pos = stop
                if remaining == 0:
                    state = _DATA_END
            elif state == _SIZE:
                eol = data.find(b"\r\n", pos, pos + MAX_CHUNK_SIZE_LINE_BYTES + 2)
                if eol < 0:
                    if end - pos > MAX_CHUNK_SIZE_LINE_BYTES:
                        raise _protocol_error("chunk size line too long")
                    self._pending = data[pos:]
                    break
                remaining = _chunk_size(data[pos:eol])
                pos = eol + 2
                state = _DATA if remaining else _TRAILER
            elif state == _DATA_END:
                if end - pos < 2:
                    if data[pos:] != b"\r":
                        raise _protocol_error("chunk data not followed by CRLF")
                    self._pending = data[pos:]
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise _protocol_error("chunk data not followed by CRLF")
                pos += 2
                state = _SIZE
            else:  # _TRAILER: fields until a blank line
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if self._trailer_bytes + end - pos > MAX_TRAILER_BYTES:
                        raise _protocol_error("chunked trailer section too large")
                    self._pending = data[pos:]
                    break
                self._trailer_bytes += eol + 2 - pos
                if self._trailer_bytes > MAX_TRAILER_BYTES:
                    raise _protocol_error("chunked trailer section too large")
                blank = eol == pos
                if not blank:
                    _check_trailer_field(data[pos:eol])
                pos = eol + 2
                if blank:
                    state = _DONE
                    break
        self._state, self._remaining = state, remaining
        body = out[0] if len(out) == 1 else b"".join(out)
        return body, (data[pos:] if state == _DONE else b"")
