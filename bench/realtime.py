"""Realtime WebSocket benchmark: an LLM's reply written into ``GET /v1/tts/realtime`` vs ``stream_text``.

A simulated LLM writes each reply at 30 tokens/s (a word and its space) into
1, 8 and 32 sockets at once (one context each, ``continue: true`` until the
last word). Per reply: the time from the first sentence's full stop being
sent to the first audio of that context arriving. Then each socket opens a
long context, waits for its first audio and sends ``cancel``: the time until
the ``done`` (cancelled) arrives, after which no audio of it comes, is the
cancel latency. The same replies go through ``OrpheusTTS.stream_text`` over
HTTP at the same concurrency, in the same run, against the same server
process; server CPU is per second of audio delivered. Engines: espeak and
synthetic paced like a neural model (100 ms to first chunk, 0.5 x real time),
each in its own server process. Also: the cost of the binary audio frame
against JSON + base64 for one 100 ms chunk.

    .venv/bin/python bench/realtime.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import websockets

from orpheus_trio import OrpheusTTS
from orpheus_trio.server.realtime import decode_audio, encode_audio

TOKENS_PER_S = 30.0
BYTES_PER_S = 24_000 * 2
REPLIES = [
    "Sure, I can help with that. The train leaves at nine fifteen from platform two.",
    "Good question. Most people find the first week the hardest, but it gets easier.",
    "I checked the order for you. It shipped yesterday and should arrive on Friday.",
    "That sounds frustrating. Let us try restarting the router first, then wait.",
]
LONG = "This is a long answer that the user will interrupt before it ends. " * 6
ENGINES: dict[str, dict[str, Any]] = {
    "espeak": {},
    "synthetic": {"ttfb_ms": 100, "rtf": 0.5, "chunk_samples": 2400},
}
SERVE = """
import sys, trio
from orpheus_trio.server import ServerConfig, serve
engine_name, defaults = sys.argv[1], __import__("json").loads(sys.argv[2])
if engine_name == "espeak":
    from orpheus_trio.server.engines.espeak import EspeakEngine as E
    engine = E()
else:
    from orpheus_trio.server.engines.synthetic import SyntheticEngine
    engine = SyntheticEngine(defaults=defaults)
async def main():
    async with trio.open_nursery() as nursery:
        config = ServerConfig(port=0, max_concurrency=64, max_queue=256, playground=False)
        print(await nursery.start(serve, engine, config), flush=True)
trio.run(main)
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(1000 * statistics.median(values), 1),
        "p99_ms": round(1000 * pct(values, 99), 1),
    }


async def llm_words(text: str, marks: dict[str, float]) -> AsyncIterator[str]:
    words = text.split(" ")
    for i, word in enumerate(words):
        await asyncio.sleep(1 / TOKENS_PER_S)
        yield word if i == len(words) - 1 else word + " "
        if "first_sentence" not in marks and word.endswith((".", "!", "?")):
            marks["first_sentence"] = time.perf_counter()


async def realtime_socket(url: str, index: int, replies: int) -> tuple[list[float], float]:
    """First-sentence-to-audio per reply, the audio seconds received."""
    latencies: list[float] = []
    audio_s = 0.0
    async with websockets.connect(url, max_size=None) as ws:
        for r in range(replies):
            cid = f"r{r}"
            marks: dict[str, float] = {}

            async def write(cid: str = cid, marks: dict[str, float] = marks, r: int = r) -> None:
                async for word in llm_words(REPLIES[(index + r) % len(REPLIES)], marks):
                    await ws.send(json.dumps({"context_id": cid, "text": word, "continue": True}))
                await ws.send(json.dumps({"type": "close_context", "context_id": cid}))

            writer = asyncio.create_task(write())
            first: float | None = None
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    audio_s += (len(decode_audio(message)[1])) / BYTES_PER_S
                    first = first or time.perf_counter()
                elif json.loads(message)["type"] == "done":
                    break
            await writer
            assert first is not None and "first_sentence" in marks
            latencies.append(first - marks["first_sentence"])
    return latencies, audio_s


async def realtime_cancel(url: str) -> float:
    """From ``cancel`` to its ``done`` (no audio of the context after it)."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"context_id": "long", "text": LONG}))
        while not isinstance(await ws.recv(), bytes):
            pass
        cancelled_at = time.perf_counter()
        await ws.send(json.dumps({"type": "cancel", "context_id": "long"}))
        while True:
            message = await ws.recv()
            if not isinstance(message, bytes) and json.loads(message).get("cancelled"):
                return time.perf_counter() - cancelled_at


async def http_reply(tts: OrpheusTTS, index: int, replies: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    audio_s = 0.0
    for r in range(replies):
        marks: dict[str, float] = {}
        first: float | None = None
        async for pcm in tts.stream_text(llm_words(REPLIES[(index + r) % len(REPLIES)], marks)):
            first = first or time.perf_counter()
            audio_s += len(pcm) / BYTES_PER_S
        assert first is not None
        latencies.append(first - marks["first_sentence"])
    return latencies, audio_s


async def load(base_url: str, sockets: int, replies: int, server: psutil.Process) -> dict[str, Any]:
    ws_url = base_url.replace("http://", "ws://") + "/v1/tts/realtime"
    cpu = server.cpu_times()
    results = await asyncio.gather(*(realtime_socket(ws_url, i, replies) for i in range(sockets)))
    cpu_ws = _cpu_since(server, cpu)
    latencies = [x for r in results for x in r[0]]
    audio_ws = sum(r[1] for r in results)
    cancels = await asyncio.gather(*(realtime_cancel(ws_url) for _ in range(sockets)))
    async with OrpheusTTS(base_url) as tts:
        cpu = server.cpu_times()
        http = await asyncio.gather(*(http_reply(tts, i, replies) for i in range(sockets)))
        cpu_http = _cpu_since(server, cpu)
    http_latencies = [x for r in http for x in r[0]]
    audio_http = sum(r[1] for r in http)
    return {
        "sockets": sockets,
        "realtime_first_audio": ms(latencies),
        "realtime_cancel": ms(list(cancels)),
        "realtime_cpu_ms_per_audio_s": round(1000 * cpu_ws / audio_ws, 2),
        "http_first_audio": ms(http_latencies),
        "http_cpu_ms_per_audio_s": round(1000 * cpu_http / audio_http, 2),
    }


def _cpu_since(process: psutil.Process, before: Any) -> float:
    now = process.cpu_times()
    return float(now.user + now.system - before.user - before.system)


def framing_cost() -> dict[str, float]:
    """One 100 ms chunk: bytes on the wire and encode + decode time, binary vs JSON + base64."""
    pcm = bytes(range(256)) * (4800 // 256) + bytes(4800 % 256)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        decode_audio(encode_audio("ctx-1", pcm))
    binary_us = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _ in range(n):
        text = json.dumps({"context_id": "ctx-1", "audio": base64.b64encode(pcm).decode()})
        base64.b64decode(json.loads(text)["audio"])
    json_us = (time.perf_counter() - start) / n * 1e6
    return {
        "binary_bytes": len(encode_audio("ctx-1", pcm)),
        "json_base64_bytes": len(
            json.dumps({"context_id": "ctx-1", "audio": base64.b64encode(pcm).decode()})
        ),
        "binary_us": round(binary_us, 2),
        "json_base64_us": round(json_us, 2),
    }


def start_server(engine: str, defaults: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    popen = subprocess.Popen(
        [sys.executable, "-c", SERVE, engine, json.dumps(defaults)], stdout=subprocess.PIPE
    )
    assert popen.stdout is not None
    return popen, popen.stdout.readline().decode().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one reply per socket (under 30 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args()
    replies = 1 if args.quick else 4
    results: dict[str, Any] = {"tokens_per_s": TOKENS_PER_S, "framing": framing_cost()}
    engines = dict(ENGINES)
    if importlib.util.find_spec("espeakng_loader") is None:
        print("espeakng_loader not installed: espeak rows skipped", file=sys.stderr)
        engines.pop("espeak")
    for engine, defaults in engines.items():
        popen, url = start_server(engine, defaults)
        try:
            server = psutil.Process(popen.pid)
            if not args.quick:
                asyncio.run(load(url, 1, 1, server))  # warm up
            results[engine] = [
                asyncio.run(load(url, n, replies, server)) for n in (1, 8, 32)
            ]
        finally:
            popen.kill()
            popen.wait()

    print(f"simulated LLM at {TOKENS_PER_S:g} tokens/s, {replies} replies per socket")
    print(f"{'engine':<10} {'sockets':>7} | {'1st sentence->audio p50/p99 (ms)':>33} "
          f"{'cancel p50/p99':>15} {'CPU ms/audio s':>14} | {'stream_text p50/p99':>20} "
          f"{'CPU ms/audio s':>14}")  # fmt: skip
    for engine in engines:
        for r in results[engine]:
            a, c, h = r["realtime_first_audio"], r["realtime_cancel"], r["http_first_audio"]
            print(
                f"{engine:<10} {r['sockets']:>7} | {a['p50_ms']:>24.1f} / {a['p99_ms']:>6.1f} "
                f"{c['p50_ms']:>7.1f} / {c['p99_ms']:>5.1f} {r['realtime_cpu_ms_per_audio_s']:>14.2f}"
                f" | {h['p50_ms']:>11.1f} / {h['p99_ms']:>6.1f} {r['http_cpu_ms_per_audio_s']:>14.2f}"
            )
    f = results["framing"]
    print(
        f"\none 100 ms chunk: binary {f['binary_bytes']} B, {f['binary_us']} us encode+decode; "
        f"JSON+base64 {f['json_base64_bytes']} B, {f['json_base64_us']} us"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
