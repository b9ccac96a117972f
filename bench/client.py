"""Client overhead benchmark: CPU per streamed request and chunks/s, clients side by side, on both loops.

A fast local server (the synthetic engine at full speed, in a separate
process so only the client's CPU is measured) streams 5 s of audio per
request: 59 chunks of 2048 samples, about 325 KB of NDJSON. Each client
streams it sequentially and 32 at a time:

- ``raw-trio``: a raw Trio socket client, HTTP/1.1 keep-alive, undoes chunked
  encoding and splits lines, decodes nothing: the floor.
- ``naive-httpx``: what a user writes by hand: ``httpx.AsyncClient.stream``,
  ``aiter_lines``, ``json.loads``, ``base64.b64decode``.
- ``naive-httpx2``: the same with httpx2 (the maintained fork), when installed.
- ``orpheus[httpx]``: ``OrpheusTTS.stream`` on the httpx transport
  (routing, hedging armed, frame decoding and checks): the "before".
- ``orpheus[trio]``: the same on the default transport, HTTP/1.1 on Trio
  streams (:mod:`orpheus_trio.transports.trio`): the "after".

Then the same on asyncio (``asyncio.run``), each ratio against its own loop's floor:

- ``raw-asyncio``: the raw client on an ``asyncio.Protocol`` (bytes by
  callback, the cheapest asyncio offers), the same work as ``raw-trio``: the floor.
- ``orpheus[asyncio]``: ``OrpheusTTS.stream`` natively on asyncio, default
  transport (:mod:`orpheus_trio.transports.asyncio`).

    .venv/bin/python bench/client.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import trio

try:
    import httpx2
except ImportError:  # optional: measured when installed
    httpx2 = None

from orpheus_trio import OrpheusTTS

TEXT = "The quick brown fox jumps over the lazy dog, again and again."
PARAMS = {"chunks": 59, "chunk_samples": 2048}
#: Issues 9 and 15: the client's CPU per request within this factor of its loop's raw client.
TARGET_X_FLOOR = 1.5
REQUEST_BODY = json.dumps({"text": TEXT, "voice": None, **PARAMS}).encode()

SERVER_CODE = """
import sys, trio
from orpheus_trio.server import ServerConfig, serve
from orpheus_trio.server.engines.synthetic import SyntheticEngine
async def main():
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, SyntheticEngine(), ServerConfig(host="127.0.0.1", port=0, max_concurrency=64, max_queue=256))
        print(url, flush=True)
trio.run(main)
"""

StreamOnce = Callable[
    [], Awaitable[int]
]  # streams one request, returns chunks received



async def count_body_lines(
    buf: bytearray, pos: int, more: Callable[[], Awaitable[None]]
) -> int:
    """Read a chunked body starting at ``buf[pos]`` to its end; return how many NDJSON lines it held.

    ``more`` appends the next bytes received to ``buf``. The terminating chunk is
    consumed, so a kept-alive connection's next response starts at ``buf[0]``.
    """
    lines, body_tail = 0, b""
    while True:
        # one chunked-encoding piece: size line, data, CRLF
        while (eol := buf.find(b"\r\n", pos)) < 0:
            await more()
        size = int(buf[pos:eol].split(b";")[0], 16)
        start = eol + 2
        while len(buf) < start + size + 2:
            await more()
        if size == 0:
            del buf[: start + 2]
            return lines
        data = body_tail + bytes(buf[start : start + size])
        lines += data.count(b"\n")
        body_tail = data[data.rfind(b"\n") + 1 :]
        pos = start + size + 2
        if pos > 1 << 20:
            del buf[:pos]
            pos = 0


class RawTrioClient:
    """HTTP/1.1 over a kept-alive trio socket; counts NDJSON lines; no decoding."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.request = (
            f"POST /v1/tts/stream HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/x-ndjson\r\nContent-Length: {len(REQUEST_BODY)}\r\n\r\n"
        ).encode() + REQUEST_BODY

    async def once(self) -> int:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
        stream = self.stream
        await stream.send_all(self.request)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(65536)
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        buf = bytearray(rest)

        async def more() -> None:
            buf.extend(await stream.receive_some(65536))

        return await count_body_lines(buf, 0, more)

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


class _Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class RawAsyncioClient:
    """The raw client on asyncio: one kept-alive connection, an ``asyncio.Protocol``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.protocol = _Collect()
        self.request = RawTrioClient(host, port).request

    async def _more(self) -> None:
        self.protocol.waiter = asyncio.get_running_loop().create_future()
        await self.protocol.waiter

    async def once(self) -> int:
        if self.transport is None:
            loop = asyncio.get_running_loop()
            self.transport, _ = await loop.create_connection(
                lambda: self.protocol, self.host, self.port
            )
        self.transport.write(self.request)
        buf = self.protocol.buf
        while b"\r\n\r\n" not in buf:
            await self._more()
        end = buf.index(b"\r\n\r\n")
        if not buf.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(bytes(buf[:end]).decode(errors="replace"))
        return await count_body_lines(buf, end + 4, self._more)

    async def aclose(self) -> None:
        if self.transport is not None:
            self.transport.close()


Maker = Callable[[], Awaitable[tuple[StreamOnce, Callable[[], Awaitable[None]]]]]


async def measure(
    makers: dict[str, Maker], requests: int, concurrency: int, rounds: int
) -> dict[str, dict[str, float]]:
    """CPU ms per request and chunks/s per client; each task has its own client.

    The clients take turns in ``rounds`` rounds, so a noisy neighbour on the
    machine hits them all alike.
    """
    workers = {
        name: [await make() for _ in range(concurrency)]
        for name, make in makers.items()
    }
    for pool in workers.values():
        for once, _ in pool:
            await once()  # warm-up: connect
    per_round = max(1, requests // (concurrency * rounds))
    totals = {
        name: {"cpu": 0.0, "wall": 0.0, "chunks": 0, "requests": 0} for name in makers
    }
    for _ in range(rounds):
        for name, pool in workers.items():
            chunks = 0

            async def run(once: StreamOnce) -> None:
                nonlocal chunks
                for _ in range(per_round):
                    received = await once()
                    chunks += received

            cpu0, wall0 = time.process_time(), time.perf_counter()
            async with anyio.create_task_group() as group:
                for once, _ in pool:
                    group.start_soon(run, once)
            total = totals[name]
            total["cpu"] += time.process_time() - cpu0
            total["wall"] += time.perf_counter() - wall0
            total["chunks"] += chunks
            total["requests"] += per_round * concurrency
    for pool in workers.values():
        for _, close in pool:
            await close()
    return {
        name: {
            "requests": t["requests"],
            "cpu_ms_per_request": 1000 * t["cpu"] / t["requests"],
            "chunks_per_s": t["chunks"] / t["wall"],
        }
        for name, t in totals.items()
    }


def clients(url: str, loop: str) -> dict[str, Maker]:
    host, port = url.removeprefix("http://").split(":")

    async def raw() -> tuple[StreamOnce, Callable[[], Awaitable[None]]]:
        client = (RawTrioClient if loop == "trio" else RawAsyncioClient)(host, int(port))
        return client.once, client.aclose

    def naive(httpx_module: Any) -> Maker:
        """The hand-written client, on ``httpx`` or its API-compatible fork ``httpx2``."""

        async def make() -> tuple[StreamOnce, Callable[[], Awaitable[None]]]:
            client = httpx_module.AsyncClient(timeout=30)

            async def once() -> int:
                n = 0
                async with client.stream(
                    "POST",
                    url + "/v1/tts/stream",
                    content=REQUEST_BODY,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if line:
                            frame = json.loads(line)
                            if frame["type"] == "chunk":
                                base64.b64decode(frame["audio"])
                                n += 1
                return n

            return once, client.aclose

        return make

    def orpheus(transport: str) -> Maker:
        async def make() -> tuple[StreamOnce, Callable[[], Awaitable[None]]]:
            tts = OrpheusTTS(url, transport=transport)  # type: ignore[arg-type]

            async def once() -> int:
                n = 0
                async for _ in tts.stream(TEXT, **PARAMS):
                    n += 1
                return n

            return once, tts.close

        return make

    if loop == "asyncio":
        return {"raw-asyncio": raw, "orpheus[asyncio]": orpheus("asyncio")}
    makers: dict[str, Maker] = {"raw-trio": raw, "naive-httpx": naive(httpx)}
    if httpx2 is not None:
        makers["naive-httpx2"] = naive(httpx2)
    makers["orpheus[httpx]"] = orpheus("httpx")
    makers["orpheus[trio]"] = orpheus("trio")
    return makers


async def main_async(url: str, args: argparse.Namespace, loop: str) -> list[dict[str, Any]]:
    rows = []
    for mode, requests, concurrency in (
        ("sequential", args.sequential, 1),
        ("32 concurrent", args.concurrent, 32),
    ):
        results = await measure(clients(url, loop), requests, concurrency, args.rounds)
        for name, result in results.items():
            rows.append({"client": name, "loop": loop, "mode": mode, **result})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests (< 30 s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.sequential = 60 if args.quick else 600
    args.concurrent = 192 if args.quick else 1280
    args.rounds = 3 if args.quick else 10
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http://"):
            raise SystemExit("the benchmark server did not start")
        rows = anyio.run(main_async, url, args, "trio", backend="trio")
        rows += anyio.run(main_async, url, args, "asyncio", backend="asyncio")
    finally:
        server.terminate()
        server.wait(10)
    floor = {
        (r["loop"], r["mode"]): r["cpu_ms_per_request"]
        for r in rows
        if r["client"].startswith("raw-")
    }
    print(
        "5 s of audio per request (59 chunks, ~325 KB NDJSON); server in a separate process"
    )
    print(f"{'client':<18}{'mode':<15}{'CPU ms/req':>11}{'x floor':>9}{'chunks/s':>11}")
    for r in rows:
        r["x_floor"] = r["cpu_ms_per_request"] / floor[r["loop"], r["mode"]]
        print(
            f"{r['client']:<18}{r['mode']:<15}{r['cpu_ms_per_request']:>11.3f}{r['x_floor']:>9.2f}"
            f"{r['chunks_per_s']:>11.0f}"
        )
    for r in rows:
        if r["client"] in ("orpheus[trio]", "orpheus[asyncio]"):
            verdict = "met" if r["x_floor"] <= TARGET_X_FLOOR else "NOT met"
            print(
                f"{r['client']} {r['mode']}: {r['x_floor']:.2f}x its loop's floor "
                f"(target <= {TARGET_X_FLOOR}x): {verdict}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"audio_s_per_request": 59 * 2048 / 24000, "rows": rows}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
