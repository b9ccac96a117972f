"""The server's connection loop alone: CPU per request, over an in-memory stream.

What the HTTP server itself costs per stream, without sockets, the engine or
the app's work: a trivial ASGI app answers each request (a JSON POST with
Content-Length) with 25 body messages of a chunk line's size, as a stream
does, and the loop parses, frames and writes them. ``--baseline SRC`` runs
the same in a subprocess on another checkout's ``src/`` (the loop of commit
4f1b705 took ``read_timeout_s`` and ``idle`` instead of ``slot`` and ``waits``).

    .venv/bin/python bench/h1_connection.py [--quick] [--json PATH] [--baseline SRC]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from orpheus_trio.server.http import connection as conn
from orpheus_trio.server.http.state import ConnectionState

BODY = json.dumps({"text": "Benchmark text.", "chunks": 25, "chunk_samples": 2400}).encode()
REQ = (
    b"POST /v1/tts/stream HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
LINE = b'{"type":"chunk","seq":0,"audio":"' + b"A" * 6400 + b'"}\n'


async def app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/x-ndjson")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for _ in range(25):
        await send({"type": "http.response.body", "body": LINE, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class Fake:
    """The caller's side: the next request as soon as an answer's last chunk is out."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.send_ch, self.recv_ch = trio.open_memory_channel(float("inf"))
        self.state = ConnectionState(self._raw)
        self.send_ch.send_nowait(REQ)
    async def _raw(self, data: bytes) -> None:
        pass

    async def send_all(self, data: bytes) -> None:
        if data.endswith(b"0\r\n\r\n"):
            self.left -= 1
            self.send_ch.send_nowait(REQ if self.left else b"")
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data: bytes = await self.recv_ch.receive()
        return data

    async def send_eof(self) -> None:
        pass


async def us_per_request(n: int) -> float:
    fake = Fake(n)
    params = inspect.signature(conn.serve_connection).parameters
    if "waits" in params:
        from orpheus_trio.server.http.fairness import ConnectionFairness, FairnessLimits
        f = ConnectionFairness(FairnessLimits(1024, 256, 32, 10.0, 2.0), trio.current_time)
        kw: dict[str, Any] = {"slot": f.admit("a"), "waits": conn.HeadWaits(f)}
    else:  # the loop of commit 4f1b705
        kw = {"read_timeout_s": 10.0, "idle": conn.IdleConnections()}  # type: ignore[attr-defined]
    t = time.process_time()
    await conn.serve_connection(app, fake, client=("a", 1), server=("b", 2), **kw)
    return (time.process_time() - t) / n * 1e6

def measure(requests: int, rounds: int) -> dict[str, float]:
    runs = sorted(trio.run(us_per_request, requests) for _ in range(rounds))
    return {"min_us": round(runs[0], 1), "median_us": round(statistics.median(runs), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (< 30 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--baseline", metavar="SRC", help="also measure the loop in this src/")
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    requests, rounds = (1000, 5) if args.quick else (3000, 7)
    if args.raw:  # a --baseline child: one JSON line
        print(json.dumps(measure(requests, rounds)))
        return 0
    results = {"this": measure(requests, rounds)}
    if args.baseline:
        command = [sys.executable, __file__, "--raw", *(["--quick"] if args.quick else [])]
        env = {**os.environ, "PYTHONPATH": args.baseline}
        done = subprocess.run(command, env=env, capture_output=True, check=True)
        results["baseline"] = json.loads(done.stdout)
    print("connection loop, CPU per request (one JSON POST in, 25 body writes out)")
    print(f"{'server':>10} {'min':>10} {'median':>10}")
    for name, row in results.items():
        print(f"{name:>10} {row['min_us']:>7} us {row['median_us']:>7} us")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
