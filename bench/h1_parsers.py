"""HTTP/1.1 request parsers for the server: CPU per request and strictness, side by side.

The server's parser choice (docs/server.md) rests on these figures. Each
candidate parses the same typical stream request (a JSON POST with
Content-Length, and the same body chunked), fed as one read, and is then
given every framing probe of tests/test_h1_server.py's table, each followed
by a pipelined ``GET``: a probe is *refused* when the parser raises before
that GET is parsed.

- ``server``: this server's :class:`RequestParser`, llhttp plus the rules it
  leaves to a server (Host, versions, transfer codings, head size): the code
  the server runs.
- ``llhttp``: httptools' parser alone, callbacks that only count requests.
- ``h11``: h11's ``Connection`` as a server, events until ``EndOfMessage``.

    .venv/bin/python bench/h1_parsers.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_h1_server import FRAMINGS, NEXT  # noqa: E402

from orpheus_trio.server.http.request import (  # noqa: E402
    END_OF_MESSAGE,
    RequestHead,
    RequestParser,
    RequestRefused,
)

BODY = b'{"text": "Benchmark text.", "chunks": 25, "chunk_samples": 2400}'
PLAIN = (
    b"POST /v1/tts/stream HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer a-key-of-some-length\r\nContent-Length: %d\r\n\r\n%s"
    % (len(BODY), BODY)
)
CHUNKED = (
    b"POST /v1/tts/stream HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer a-key-of-some-length\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
)


def httptools_request(wire: bytes) -> int:
    """Parse one request; the number of requests parsed (refusal: raise)."""
    parser = RequestParser()
    parser.feed(wire)
    requests = 0
    while (event := parser.next_event()) is not None:
        if isinstance(event, RequestRefused):
            raise event
        if isinstance(event, RequestHead):
            requests += 1
        elif event is END_OF_MESSAGE and requests == 2:
            break
    return requests


class _Counter:
    def __init__(self) -> None:
        self.requests = 0

    def on_message_begin(self) -> None:
        self.requests += 1

    def on_body(self, body: bytes) -> None:
        pass


def llhttp_request(wire: bytes) -> int:
    counter = _Counter()
    try:
        httptools.HttpRequestParser(counter).feed_data(wire)
    except httptools.HttpParserUpgrade:
        pass
    return counter.requests


def h11_request(wire: bytes) -> int:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(wire)
    requests = 0
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Request):
            requests += 1
        elif isinstance(event, h11.EndOfMessage):
            if requests == 2 or connection.their_state is h11.MUST_CLOSE:
                return requests
            connection.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            connection.send(h11.EndOfMessage())
            connection.start_next_cycle()
        elif event is h11.NEED_DATA or event is h11.PAUSED:
            return requests


PARSERS: dict[str, Callable[[bytes], int]] = {
    "server": httptools_request,
    "llhttp": llhttp_request,
    "h11": h11_request,
}


def cpu_us_per_request(parse: Callable[[bytes], int], wire: bytes, runs: int) -> float:
    started = time.process_time()
    for _ in range(runs):
        parse(wire)
    return 1e6 * (time.process_time() - started) / runs


def refused(parse: Callable[[bytes], int], wire: bytes) -> bool:
    try:
        return parse(wire + NEXT) < 2  # the pipelined GET never parsed
    except (RequestRefused, httptools.HttpParserError, h11.ProtocolError):
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (< 30 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args()
    runs = 5_000 if args.quick else 50_000
    results: dict[str, Any] = {}
    for name, parse in PARSERS.items():
        results[name] = {
            "cpu_us_per_request": {
                "content-length": round(cpu_us_per_request(parse, PLAIN, runs), 2),
                "chunked": round(cpu_us_per_request(parse, CHUNKED, runs), 2),
            },
            "probes_refused": sorted(k for k, (wire, _) in FRAMINGS.items() if refused(parse, wire)),
        }
    print(f"{len(FRAMINGS)} framing probes; CPU per request parsed, head and body, one read")
    print(f"{'parser':>10} {'content-length':>15} {'chunked':>10} {'probes refused':>15}")
    for name, row in results.items():
        cpu = row["cpu_us_per_request"]
        print(
            f"{name:>10} {cpu['content-length']:>12} us {cpu['chunked']:>7} us "
            f"{len(row['probes_refused']):>9} / {len(FRAMINGS)}"
        )
    missed = {name: sorted(set(FRAMINGS) - set(row["probes_refused"])) for name, row in results.items()}
    for name, probes in missed.items():
        print(f"{name} serves: {', '.join(probes) or 'none'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
