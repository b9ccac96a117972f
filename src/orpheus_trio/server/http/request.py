"""Sans-IO HTTP/1.1 requests for the built-in server: llhttp frames them, we add what it leaves to us.

No sockets here. :mod:`.connection` feeds what it reads to a
:class:`RequestParser` and takes events out of it, in order: a
:class:`RequestHead`, body pieces (``bytes``), :data:`END_OF_MESSAGE`, the next
request's head, ... A request that cannot be served becomes a
:class:`RequestRefused` event (the status to answer, then close); nothing
after it is parsed.

Framing is llhttp's (through httptools, as uvicorn uses it), in its strict
mode: both ``Content-Length`` and ``Transfer-Encoding``, a repeated, signed,
hex or list-valued ``Content-Length``, obs-folded lines, bare CR or LF line
ends (in the head, a chunk extension or a trailer), NUL and other controls in
a field, chunk-size overflow and malformed chunks are all its refusals
(docs/server.md has the measured comparison with h11). On top of it, this
module refuses what llhttp leaves to the server: a transfer coding other than
a single ``chunked`` (501), ``Transfer-Encoding`` on HTTP/1.0, a missing or
repeated ``Host``, versions other than 1.x (505), an unmet ``Expect`` (417),
request targets that are not a path, and heads over
:data:`MAX_REQUEST_HEAD_BYTES` (431).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote

import httptools

__all__ = [
    "END_OF_MESSAGE",
    "MAX_REQUEST_HEAD_BYTES",
    "RequestEvent",
    "RequestHead",
    "RequestParser",
    "RequestRefused",
    "reason_phrase",
]

#: Longest request head (request line and fields) accepted; past it, 431.
MAX_REQUEST_HEAD_BYTES = 16 * 1024


class RequestRefused(Exception):
    """The request cannot be served: answer ``status`` with ``reason`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    #: The request target's path and query as sent (``raw_path`` and ``query_string``).
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


class _EndOfMessage:
    def __repr__(self) -> str:
        return "END_OF_MESSAGE"


#: The request's body is complete (its trailers, if any, were checked and dropped).
END_OF_MESSAGE: Final = _EndOfMessage()

RequestEvent = RequestHead | bytes | _EndOfMessage | RequestRefused


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class RequestParser:
    """One connection's requests, parsed from the bytes fed in (see the module docstring)."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[RequestEvent] = deque()
        #: Set once a refusal (or an upgrade) is queued: what follows is not parsed.
        self._stopped = False
        self._in_head = True
        #: Bytes of the current head so far: its complete lines, and what was fed
        #: while a line was still open (llhttp holds no limit of its own).
        self._head_bytes = 0
        self._fed_in_head = 0
        self._message_ended = False
        self._body_bytes = 0
        self._framing_bytes = 0
        self._refusal: RequestRefused | None = None
        self._reset_head()

    def _reset_head(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._content_length: int | None = None
        self._chunked = False
        self._hosts = 0
        self._expect: bytes | None = None
        self._close_asked = False

    # -- feeding and taking events -----------------------------------------------

    def feed(self, data: bytes | bytearray) -> None:
        """Parse ``data``; the events it completes are queued for :meth:`next_event`."""
        if self._stopped or not data:
            return
        self._message_ended = False
        in_body = not self._in_head
        body_before = self._body_bytes
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # ``Upgrade`` or CONNECT: the request is served as a plain one and
            # the connection then closes (what follows is not HTTP/1.1).
            self._stopped = True
            for index in range(len(self._events) - 1, -1, -1):
                event = self._events[index]
                if isinstance(event, RequestHead):
                    self._events[index] = replace(event, keep_alive=False)
                    break
            return
        except httptools.HttpParserCallbackError as error:
            refused = self._refusal or RequestRefused(400, str(error))
            self._stop(refused)
            return
        except httptools.HttpParserError as error:
            self._stop(RequestRefused(400, f"malformed request: {error}"))
            return
        if in_body and not self._message_ended:
            # Chunk size lines, extensions and trailers: llhttp bounds none of them.
            self._framing_bytes += len(data) - (self._body_bytes - body_before)
            if self._framing_bytes > MAX_REQUEST_HEAD_BYTES + 8 * self._body_bytes:
                self._stop(
                    RequestRefused(400, "chunk framing (extensions, trailers) too large")
                )
        elif self._in_head:
            self._fed_in_head = 0 if self._message_ended else self._fed_in_head + len(data)
            if max(self._fed_in_head, self._head_bytes) > MAX_REQUEST_HEAD_BYTES:
                self._stop(_head_too_large())

    def next_event(self) -> RequestEvent | None:
        """The next event, or ``None`` until more is fed."""
        return self._events.popleft() if self._events else None

    def next_body(self) -> bytes | _EndOfMessage | RequestRefused | None:
        """Like :meth:`next_event` inside a body: adjacent pieces come as one."""
        events = self._events
        if not events or not isinstance(events[0], bytes):
            return self.next_event()  # type: ignore[return-value]
        piece = events.popleft()
        assert isinstance(piece, bytes)
        if not events or not isinstance(events[0], bytes):
            return piece
        pieces = [piece]
        while events and isinstance(events[0], bytes):
            pieces.append(events.popleft())  # type: ignore[arg-type]
        return b"".join(pieces)

    def take_end_of_message(self) -> bool:
        """Take :data:`END_OF_MESSAGE` if it is the next event."""
        if self._events and self._events[0] is END_OF_MESSAGE:
            self._events.popleft()
            return True
        return False

    def _stop(self, refused: RequestRefused) -> None:
        self._stopped = True
        self._events.append(refused)

    # -- llhttp's callbacks (httptools calls them by name) ----------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._body_bytes = 0
        self._framing_bytes = 0
        self._reset_head()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer field: llhttp checked its syntax; nothing reads it
        self._count(len(name) + len(value) + 4)
        name = name.lower()
        value = value.strip(b" \t")
        self._headers.append((name, value))
        if name == b"content-length":
            # llhttp has refused a repeated, signed, hex or list-valued length.
            self._content_length = int(value)
        elif name == b"transfer-encoding":
            if self._chunked:
                self._refuse(400, "more than one Transfer-Encoding header")
            if value.lower() != b"chunked":
                self._refuse(501, "the only transfer coding accepted is chunked")
            self._chunked = True
        elif name == b"host":
            self._hosts += 1
        elif name == b"connection":
            self._close_asked |= any(
                token.strip().lower() == b"close" for token in value.split(b",")
            )
        elif name == b"expect":
            self._expect = value.lower()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._fed_in_head = 0
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._refuse(505, "only HTTP/1.0 and HTTP/1.1 are served")
        if self._chunked and version != "1.1":
            self._refuse(400, "Transfer-Encoding needs HTTP/1.1")
        if version == "1.1" and self._hosts != 1:
            self._refuse(400, "an HTTP/1.1 request needs exactly one Host header")
        if self._expect is not None and self._expect != b"100-continue":
            self._refuse(417, f"cannot meet the expectation {self._expect[:40]!r}")
        try:
            target = _origin_form(self._url)
        except RequestRefused as refused:
            raise self._remember(refused) from None
        path, _, query = target.partition(b"?")
        self._events.append(
            RequestHead(
                method=parser.get_method().decode("ascii"),
                target=target,
                path=unquote(path.decode("ascii"), errors="replace"),
                query=query,
                http_version=version,
                headers=self._headers,
                content_length=self._content_length,
                chunked=self._chunked,
                # HTTP/1.0 keep-alive is a legacy extension; such a client gets one request.
                keep_alive=version == "1.1" and not self._close_asked,
                expect_continue=self._expect is not None and version == "1.1",
            )
        )

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._events.append(body)

    def on_message_complete(self) -> None:
        self._events.append(END_OF_MESSAGE)
        self._in_head = True
        self._head_bytes = 0
        self._message_ended = True

    # -- helpers --------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            raise self._remember(_head_too_large())

    def _refuse(self, status: int, reason: str) -> None:
        raise self._remember(RequestRefused(status, reason))

    def _remember(self, refused: RequestRefused) -> RequestRefused:
        """Keep the refusal: httptools turns a callback's exception into its own."""
        self._refusal = refused
        return refused


def _head_too_large() -> RequestRefused:
    return RequestRefused(431, f"request head larger than {MAX_REQUEST_HEAD_BYTES} bytes")


def _origin_form(url: bytes) -> bytes:
    """The path and query of a request target (a proxy's absolute form keeps only those)."""
    if url.startswith(b"/"):
        return url
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise RequestRefused(400, "the request target must be a path")
    slash = rest.find(b"/")
    return rest[slash:] if slash >= 0 else b"/"
