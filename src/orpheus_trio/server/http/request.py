"""Sans-IO HTTP/1.1 request heads for the built-in server: parse strictly, refuse what is ambiguous.

No sockets here: :mod:`.connection` finds the head in what it read and hands
it over; :func:`parse_request_head` returns a :class:`RequestHead` or raises
:class:`RequestRefused` with the status to answer (and then close).

Strict where a lenient parser lets a front proxy and this server disagree on
where a request ends (RFC 9112 §6.3, :func:`~.guard.check_request_head`):
both ``Content-Length`` and ``Transfer-Encoding``, a repeated or list-valued
``Content-Length``, obs-folded lines, whitespace before a field's colon, a
transfer coding other than ``chunked``, control characters anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

from .guard import check_request_head

__all__ = [
    "MAX_REQUEST_HEAD_BYTES",
    "RequestHead",
    "RequestRefused",
    "parse_request_head",
    "reason_phrase",
]

#: Longest request head (request line and fields) accepted; past it, 431.
MAX_REQUEST_HEAD_BYTES = 16 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
#: Controls other than tab: never in a field value (DEL passes, as with h11).
_BAD_VALUE_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f]")
_DIGITS = re.compile(rb"[0-9]{1,18}")


class RequestRefused(Exception):
    """The request cannot be served: answer ``status`` with ``reason`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    #: The request target as sent (``raw_path`` and ``query_string`` come from it).
    target: bytes
    path: str
    query: bytes
    http_version: str
    #: Field names lower-cased, values with surrounding whitespace removed, in order.
    headers: list[tuple[bytes, bytes]]
    #: ``None``: no Content-Length (the body is chunked, or there is none).
    content_length: int | None
    chunked: bool
    #: Whether the client lets the connection carry another request after this one.
    keep_alive: bool
    expect_continue: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def parse_request_head(head: bytes) -> RequestHead:
    """Parse ``head`` (request line and fields, without the blank line that ends them)."""
    if len(head) > MAX_REQUEST_HEAD_BYTES:
        raise RequestRefused(431, f"request head larger than {MAX_REQUEST_HEAD_BYTES} bytes")
    if b"\r" in head.replace(b"\r\n", b""):
        raise RequestRefused(400, "a bare CR in the request head")
    ambiguous = check_request_head(head)
    if ambiguous is not None:
        raise RequestRefused(400, ambiguous)
    request_line, *field_lines = head.split(b"\r\n")
    method, target, version = _request_line(request_line)
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    chunked = False
    hosts = 0
    connection_tokens: set[bytes] = set()
    expect_continue = False
    for line in field_lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise RequestRefused(400, f"malformed header line {line[:40]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE_BYTES.search(value):
            raise RequestRefused(400, f"a control character in header {name[:40]!r}")
        name = name.lower()
        headers.append((name, value))
        if name == b"content-length":
            if not _DIGITS.fullmatch(value):
                raise RequestRefused(400, f"Content-Length must be a number, got {value[:40]!r}")
            content_length = int(value)
        elif name == b"transfer-encoding":
            if value.lower() != b"chunked":
                raise RequestRefused(501, "the only transfer coding accepted is chunked")
            if version != "1.1":
                raise RequestRefused(400, "Transfer-Encoding needs HTTP/1.1")
            chunked = True
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            connection_tokens.update(t.strip().lower() for t in value.split(b","))
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise RequestRefused(417, f"cannot meet the expectation {value[:40]!r}")
            expect_continue = version == "1.1"
    if version == "1.1" and hosts != 1:
        raise RequestRefused(400, "an HTTP/1.1 request needs exactly one Host header")
    path, _, query = target.partition(b"?")
    return RequestHead(
        method=method,
        target=target,
        path=unquote(path.decode("ascii"), errors="replace"),
        query=query,
        http_version=version,
        headers=headers,
        content_length=content_length,
        chunked=chunked,
        # HTTP/1.0 keep-alive is a legacy extension; such a client gets one request.
        keep_alive=version == "1.1" and b"close" not in connection_tokens,
        expect_continue=expect_continue,
    )


def _request_line(line: bytes) -> tuple[str, bytes, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise RequestRefused(400, f"malformed request line {line[:60]!r}")
    method, target, version = parts
    matched = _VERSION.fullmatch(version)
    if matched is None:
        raise RequestRefused(400, f"malformed HTTP version {version[:20]!r}")
    if matched.group(1) != b"1":
        raise RequestRefused(505, "only HTTP/1.0 and HTTP/1.1 are served")
    if not target.startswith(b"/"):
        # Absolute form (a proxy's): the path is what follows the authority.
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise RequestRefused(400, "the request target must be a path")
        slash = rest.find(b"/")
        target = rest[slash:] if slash >= 0 else b"/"
    return method.decode("ascii"), target, "1.1" if matched.group(2) != b"0" else "1.0"
