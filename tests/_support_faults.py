"""A raw trio socket server for faults the reference server cannot make, and leak probes.

:class:`RawServer` listens on 127.0.0.1, port 0, and answers the n-th request
with ``replies(n)``: a :data:`Reply`, an async function driving one
:class:`Conn`. Replies can reset the TCP connection (RST) before or after the
headers, send headers then go silent, write any bytes as the NDJSON body, or
serve a good stream whose audio tells which request it came from
(:func:`pcm_of`), so a test can prove that audio from two attempts never mixed.

Every connection stays counted in ``open_connections`` until the *client*
closes it (or the reply resets it), so a test sees a connection the client
leaked. :func:`open_fds` and :func:`task_count` measure the client process.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from orpheus_trio.protocol.frames import encode_chunk, encode_eos, encode_error

__all__ = [
    "Conn",
    "RawServer",
    "Reply",
    "body",
    "closed_port_url",
    "drip",
    "expected_audio",
    "good",
    "good_lines",
    "open_fds",
    "pcm_of",
    "reset_after",
    "reset_before_headers",
    "silence_after",
    "status",
    "task_count",
]

#: How long the server waits for the client to close a connection after its reply.
CLIENT_CLOSE_WAIT_S = 30.0
CHUNKS = 3
PCM_BYTES = 64


class Conn:
    """One accepted connection: the request that came, and ways to answer it."""

    def __init__(self, stream: Any, index: int, request: bytes) -> None:
        self.stream = stream
        self.index = index
        self.request = request

    async def send_head(
        self, status: int = 200, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        lines = [f"HTTP/1.1 {status} X"]
        lines += [f"{k}: {v}" for k, v in headers]
        await self.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def send_stream_head(self, *, keep_alive: bool = False) -> None:
        await self.send_head(
            200,
            [
                ("Content-Type", "application/x-ndjson"),
                ("Transfer-Encoding", "chunked"),
                *([] if keep_alive else [("Connection", "close")]),
                ("X-Request-Id", f"raw-{self.index}"),
            ],
        )

    async def send_piece(self, data: bytes) -> None:
        """One HTTP/1.1 chunk of the body."""
        if data:
            await self.stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_body(self) -> None:
        await self.stream.send_all(b"0\r\n\r\n")

    async def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0)."""
        self.stream.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        await self.stream.aclose()

    async def until_client_closes(self, limit_s: float = CLIENT_CLOSE_WAIT_S) -> bool:
        """Wait up to ``limit_s`` for the client to close; whether it did."""
        with trio.move_on_after(limit_s):
            try:
                while await self.stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return True
        return False


Reply = Callable[[Conn], Awaitable[None]]


@dataclass
class RawServer:
    """Answers request ``n`` (counted from 0, across connections) with ``replies(n)``.

    ``keep_alive``: after a reply, read the connection's next request (else close it).
    """

    replies: Callable[[int], Reply]
    keep_alive: bool = False
    requests: int = 0
    connections: int = 0
    open_connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    url: str = ""

    async def start(
        self, nursery: trio.Nursery, ssl_context: ssl.SSLContext | None = None
    ) -> str:
        """Listen; with ``ssl_context``, speak TLS (``https://`` URL)."""
        if ssl_context is None:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            )
            sock = listeners[0].socket
        else:
            listeners = await nursery.start(
                partial(
                    trio.serve_ssl_over_tcp,
                    self._handle,
                    0,
                    ssl_context,
                    host="127.0.0.1",
                )
            )
            sock = listeners[0].transport_listener.socket
        scheme = "http" if ssl_context is None else "https"
        self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def _handle(self, stream: Any) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            while (read := await _read_request(stream)) is not None:
                head, request = read
                index = self.requests
                self.requests += 1
                self.heads.append(head)
                self.bodies.append(request)
                await self.replies(index)(Conn(stream, index, request))
                if not self.keep_alive:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-reply: that is what some tests do
        finally:
            self.open_connections -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def wait_connections_closed(self, timeout_s: float = 3.0) -> int:
        """Wait until the client closed every connection; return how many stayed open."""
        with trio.move_on_after(timeout_s):
            while self.open_connections:
                await trio.sleep(0.01)
        return self.open_connections


async def _read_request(stream: Any) -> tuple[bytes, bytes] | None:
    """Read one request's head and Content-Length body; ``None`` if the client left first."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        piece = await stream.receive_some(65536)
        if not piece:
            return None
        data += piece
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = bytearray(rest)
    while len(body) < length:
        piece = await stream.receive_some(65536)
        if not piece:
            return None
        body += piece
    return head, bytes(body)


# -- audio that names its request ------------------------------------------------


def pcm_of(request: int, seq: int) -> bytes:
    """Chunk ``seq`` of a good answer to request ``request``: recognisable bytes."""
    return bytes([request % 251, seq % 251]) * (PCM_BYTES // 2)


def good_lines(request: int, chunks: int = CHUNKS) -> list[bytes]:
    lines = [encode_chunk(seq, pcm_of(request, seq)) for seq in range(chunks)]
    return lines + [encode_eos(chunks, chunks * PCM_BYTES // 2)]


def expected_audio(request: int, chunks: int = CHUNKS) -> bytes:
    return b"".join(pcm_of(request, seq) for seq in range(chunks))


# -- replies -----------------------------------------------------------------------


def body(
    pieces: Sequence[bytes],
    *,
    first_delay_s: float = 0.0,
    gap_s: float = 0.0,
    end: bool = True,
) -> Reply:
    """A 200 whose body is ``pieces`` (each one HTTP chunk, a read apart), then the end."""

    async def reply(conn: Conn) -> None:
        await conn.send_stream_head()
        if first_delay_s and await conn.until_client_closes(first_delay_s):
            return  # the client gave up (a hedge won) while we were slow
        for n, piece in enumerate(pieces):
            if n and gap_s:
                await trio.sleep(gap_s)
            await conn.send_piece(piece)
        if end:
            await conn.end_body()
        await conn.until_client_closes()

    return reply


def good(*, first_delay_s: float = 0.0, gap_s: float = 0.0) -> Reply:
    """A complete stream of :func:`pcm_of` audio for the request it answers."""

    async def reply(conn: Conn) -> None:
        await body(good_lines(conn.index), first_delay_s=first_delay_s, gap_s=gap_s)(
            conn
        )

    return reply


def reset_before_headers() -> Reply:
    async def reply(conn: Conn) -> None:
        await conn.reset()

    return reply


def reset_after(pieces: Sequence[bytes], *, pause_s: float = 0.05) -> Reply:
    """Headers and ``pieces``, a pause (so the client reads them), then RST."""

    async def reply(conn: Conn) -> None:
        await conn.send_stream_head()
        for piece in pieces:
            await conn.send_piece(piece)
        await trio.sleep(pause_s)
        await conn.reset()

    return reply


def silence_after(pieces: Sequence[bytes]) -> Reply:
    """Headers and ``pieces``, then nothing until the client gives up."""

    async def reply(conn: Conn) -> None:
        await conn.send_stream_head()
        for piece in pieces:
            await conn.send_piece(piece)
        await conn.until_client_closes()

    return reply


def status(code: int, error_code: str, *, retry_after: str | None = None) -> Reply:
    """A JSON error answer before any streaming."""

    async def reply(conn: Conn) -> None:
        payload = b'{"error": {"code": "%s", "message": "scripted %d"}}' % (
            error_code.encode(),
            code,
        )
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
        ]
        if retry_after is not None:
            headers.append(("Retry-After", retry_after))
        await conn.send_head(code, headers)
        await conn.stream.send_all(payload)
        await conn.until_client_closes()

    return reply


def drip(pieces: Sequence[bytes], *, every_s: float, filler: bytes) -> Reply:
    """Headers and ``pieces``, then ``filler`` every ``every_s`` for as long as the client listens.

    Never silent long enough for a read timeout: only a deadline or a hedge ends it.
    """

    async def reply(conn: Conn) -> None:
        await conn.send_stream_head()
        for piece in pieces:
            await conn.send_piece(piece)
        while not await conn.until_client_closes(every_s):
            await conn.send_piece(filler)

    return reply


def error_line(code: str = "engine_error") -> bytes:
    return encode_error(code, "scripted")


# -- probes ------------------------------------------------------------------------


def closed_port_url() -> str:
    """A URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    """Every task alive in this trio run."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def make_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed CA's certificate for 127.0.0.1: (server context, CA file to trust)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orpheus-trio test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, cert_path
