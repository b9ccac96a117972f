"""Reference server benchmark: throughput and CPU per audio second; espeak RTF and first chunk.

The server runs in its own process (``orpheus-trio serve``), so its CPU time is
measured alone (psutil) while this process drives the load with a lean raw
HTTP/1.1 client (no JSON or base64 decoding: we measure the server, not a client).

- synthetic engine at full speed (rtf 0), 2.5 s of audio per request
  (25 chunks of 2400 samples), 1 and 32 requests at a time:
  streams/s, audio seconds/s, server CPU ms per audio second, median first chunk.
- espeak engine, one paragraph at a time: real-time factor (wall time / audio
  time) and time to first chunk.
- ``POST /v1/audio/speech`` (OpenAI's API) per ``response_format``, synthetic
  engine, one stream at a time, beside ``/v1/tts/stream`` (NDJSON) in the same
  run: median time to the first body byte and server CPU ms per audio second
  (what encoding each format costs the server).

With ``--baseline SRC`` (the ``src/`` of another checkout, e.g. a worktree
of an earlier commit), the synthetic rows run on both servers, alternating,
in the same run: a before/after comparison on the same machine load.

    .venv/bin/python bench/server.py [--quick] [--json PATH] [--baseline SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import trio
import trio.lowlevel

SYNTHETIC_BODY = {"text": "Benchmark text.", "chunks": 25, "chunk_samples": 2400}
ESPEAK_TEXT = (
    "The reference server streams speech sentence by sentence. "
    "Each sentence is synthesized by espeak and resampled to twenty four kilohertz. "
    "The first chunk should arrive long before the whole paragraph is done. "
    "That is what makes the demo feel immediate."
)


class ServerProcess:
    """``orpheus-trio serve`` on a free port, in a child process."""

    def __init__(
        self, engine: str, options: Sequence[str] = (), *, src: str | None = None
    ) -> None:
        self._start("serve", ["--engine", engine, *options], listening="engine", src=src)

    def _start(
        self, command: str, options: list[str], *, listening: str, src: str | None
    ) -> None:
        """Run ``orpheus-trio <command>`` (from ``src`` if given) on a free port; its
        address comes from the log line ``<listening> on http://HOST:PORT``."""
        env = None if src is None else {**os.environ, "PYTHONPATH": src}
        self.popen = subprocess.Popen(
            [
                sys.executable, "-m", "orpheus_trio", command, "--port", "0", *options,
                "--max-concurrency", "64", "--max-queue", "256", "--log-level", "WARNING",
            ],
            stderr=subprocess.PIPE,
            env=env,
        )  # fmt: skip
        assert self.popen.stderr is not None
        seen = ""
        pattern = listening + r" on http://([0-9.]+):(\d+)"
        while (match := re.search(pattern, seen)) is None:
            line = self.popen.stderr.readline().decode()
            if not line:
                raise RuntimeError(f"orpheus-trio {command} did not start: {seen}")
            seen += line
        self.host, self.port = match.group(1), int(match.group(2))
        self.process = psutil.Process(self.popen.pid)

    def cpu_s(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait()


class RawClient:
    """One kept-alive HTTP/1.1 connection; reads a chunked NDJSON body to its end."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None

    async def _send(self, path: str, body: dict[str, Any]) -> float:
        """Send one JSON POST (connecting on first use); return when it was sent (perf_counter)."""
        payload = json.dumps(body).encode()
        request = (
            b"POST %s HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        ) % (path.encode(), len(payload), payload)
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
        start = time.perf_counter()
        await self.stream.send_all(request)
        return start

    async def post(self, body: dict[str, Any]) -> tuple[float, int]:
        """Stream one request; return (seconds to first chunk, samples received)."""
        start = await self._send("/v1/tts/stream", body)
        buffer = bytearray()
        first_chunk_s: float | None = None
        while True:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                raise RuntimeError("server closed the connection")
            buffer += data
            if first_chunk_s is None and b'"type":"chunk"' in buffer:
                first_chunk_s = time.perf_counter() - start
            # The body ends with the eos line and the terminating zero-length chunk.
            end = buffer.find(b"\r\n0\r\n\r\n")
            if end >= 0 and b'"type":"eos"' in buffer:
                break
        if b" 200 " not in buffer[:16]:
            raise RuntimeError(bytes(buffer[:200]).decode(errors="replace"))
        eos = re.search(rb'"type":"eos","chunks":\d+,"samples":(\d+)', buffer)
        assert eos is not None and first_chunk_s is not None
        return first_chunk_s, int(eos.group(1))


class SpeechClient(RawClient):
    """``POST /v1/audio/speech`` on a kept-alive connection, chunked body read to its end."""

    async def speech(self, body: dict[str, Any]) -> tuple[float, int]:
        """Stream one request; return (seconds to the first body byte, body bytes)."""
        start = await self._send("/v1/audio/speech", body)
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += await self._receive()
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        if b" 200 " not in head[:16]:
            raise RuntimeError(head.decode(errors="replace"))
        buffer = bytearray(rest)
        first_byte_s: float | None = None
        size = 0
        while True:  # chunked framing: "<hex size>\r\n<data>\r\n", ended by size 0
            while b"\r\n" not in buffer:
                buffer += await self._receive()
            line, _, remainder = bytes(buffer).partition(b"\r\n")
            length = int(line.split(b";")[0], 16)
            while len(remainder) < length + 2:
                remainder += await self._receive()
            if length and first_byte_s is None:
                first_byte_s = time.perf_counter() - start
            size += length
            buffer = bytearray(remainder[length + 2 :])
            if length == 0:
                break
        assert first_byte_s is not None
        return first_byte_s, size

    async def _receive(self) -> bytes:
        assert self.stream is not None
        data = await self.stream.receive_some(1 << 16)
        if not data:
            raise RuntimeError("server closed the connection")
        return data


SPEECH_FORMATS = ("pcm", "ndjson", "wav", "mp3", "opus", "aac", "flac")


async def speech_rows(server: ServerProcess, runs: int) -> list[dict[str, Any]]:
    """TTFB and server CPU per audio second for each format, one stream at a time."""
    client = SpeechClient(server.host, server.port)
    audio_s = SYNTHETIC_BODY["chunks"] * SYNTHETIC_BODY["chunk_samples"] / 24_000
    body = {"input": SYNTHETIC_BODY["text"], "chunks": SYNTHETIC_BODY["chunks"],
            "chunk_samples": SYNTHETIC_BODY["chunk_samples"]}  # fmt: skip
    rows = []
    for format in SPEECH_FORMATS:
        request = body if format == "ndjson" else {**body, "response_format": format}
        for _ in range(2):  # warm up: codec tables, first imports
            await (client.post(SYNTHETIC_BODY) if format == "ndjson" else client.speech(request))
        cpu_before = server.cpu_s()
        firsts, sizes = [], []
        for _ in range(runs):
            if format == "ndjson":
                first, samples = await client.post(SYNTHETIC_BODY)
                size = samples * 2
            else:
                first, size = await client.speech(request)
            firsts.append(first)
            sizes.append(size)
        cpu = server.cpu_s() - cpu_before
        rows.append({
            "format": format,
            "streams": runs,
            "ttfb_ms_p50": round(1000 * statistics.median(firsts), 2),
            "server_cpu_ms_per_audio_s": round(1000 * cpu / (runs * audio_s), 3),
            "bytes_per_audio_s": round(statistics.median(sizes) / audio_s),
        })  # fmt: skip
    return rows


async def stream_many(
    server: ServerProcess, body: dict[str, Any], concurrency: int, total: int
) -> tuple[list[tuple[float, int]], float]:
    """Stream ``total`` requests, ``concurrency`` at a time, each caller on its own
    kept-alive connection: ((seconds to first chunk, samples) per request, wall seconds)."""
    results: list[tuple[float, int]] = []
    remaining = total

    async def caller() -> None:
        nonlocal remaining
        client = RawClient(server.host, server.port)
        while remaining > 0:
            remaining -= 1
            results.append(await client.post(body))

    wall_before = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return results, time.perf_counter() - wall_before


async def drive(
    server: ServerProcess, body: dict[str, Any], concurrency: int, total: int
) -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    cpu_before = server.cpu_s()
    results, wall = await stream_many(server, body, concurrency, total)
    cpu = server.cpu_s() - cpu_before
    audio_s = sum(samples for _, samples in results) / 24_000
    return {
        "concurrency": concurrency,
        "streams": total,
        "streams_per_s": round(total / wall, 1),
        "audio_s_per_s": round(audio_s / wall, 1),
        "server_cpu_ms_per_audio_s": round(1000 * cpu / audio_s, 3),
        "first_chunk_ms_p50": round(
            1000 * statistics.median(first for first, _ in results), 2
        ),
    }


async def espeak_runs(server: ServerProcess, runs: int) -> dict[str, Any]:
    client = RawClient(server.host, server.port)
    rtfs, firsts = [], []
    for _ in range(runs):
        start = time.perf_counter()
        first, samples = await client.post({"text": ESPEAK_TEXT})
        rtfs.append((time.perf_counter() - start) / (samples / 24_000))
        firsts.append(first)
    return {
        "runs": runs,
        "audio_s": round(samples / 24_000, 2),
        "rtf_median": round(statistics.median(rtfs), 4),
        "first_chunk_ms_median": round(1000 * statistics.median(firsts), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer streams (< 30 s)")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write results as JSON"
    )
    parser.add_argument(
        "--baseline", metavar="SRC",
        help="also run the synthetic rows on the server in this src/ directory",
    )  # fmt: skip
    args = parser.parse_args()
    scale = 1 if args.quick else 5
    results: dict[str, Any] = {"synthetic": []}

    servers = {"this": ServerProcess("synthetic")}
    if args.baseline:
        servers["baseline"] = ServerProcess("synthetic", src=args.baseline)
    try:
        for server in servers.values():
            trio.run(drive, server, SYNTHETIC_BODY, 1, 10)  # warm up
        for concurrency, total in ((1, 100 * scale), (32, 320 * scale)):
            for name in sorted(servers):  # baseline first, then this one
                row = trio.run(drive, servers[name], SYNTHETIC_BODY, concurrency, total)
                results["synthetic"].append({"server": name, **row})
        results["speech"] = trio.run(speech_rows, servers["this"], 20 * scale)
    finally:
        for server in servers.values():
            server.stop()
    server = ServerProcess("espeak")
    try:
        trio.run(espeak_runs, server, 1)  # warm up
        results["espeak"] = trio.run(espeak_runs, server, 5 * scale)
    finally:
        server.stop()

    print("synthetic engine, full speed, 2.5 s of audio per stream")
    print(
        f"{'server':>8} {'concurrent':>10} {'streams':>8} {'streams/s':>10} {'audio s/s':>10} {'CPU ms/audio s':>15} {'first chunk p50':>16}"
    )
    for row in results["synthetic"]:
        print(
            f"{row['server']:>8} {row['concurrency']:>10} {row['streams']:>8} {row['streams_per_s']:>10} "
            f"{row['audio_s_per_s']:>10} {row['server_cpu_ms_per_audio_s']:>15} "
            f"{row['first_chunk_ms_p50']:>13} ms"
        )
    print("\nPOST /v1/audio/speech per response_format (ndjson = /v1/tts/stream), 2.5 s, 1 at a time")
    print(f"{'format':>8} {'streams':>8} {'TTFB p50':>11} {'CPU ms/audio s':>15} {'bytes/audio s':>14}")
    for row in results["speech"]:
        print(
            f"{row['format']:>8} {row['streams']:>8} {row['ttfb_ms_p50']:>8} ms "
            f"{row['server_cpu_ms_per_audio_s']:>15} {row['bytes_per_audio_s']:>14}"
        )
    e = results["espeak"]
    print(
        f"\nespeak engine, {e['audio_s']} s paragraph x {e['runs']}: RTF {e['rtf_median']} "
        f"(median), first chunk {e['first_chunk_ms_median']} ms (median)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
