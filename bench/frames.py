"""Frame decoder throughput: NDJSON MB/s and frames/s, fed in 16 KiB pieces, one core.

Rows, side by side for 512-, 2048- and 24000-sample chunks:
  cython           orpheus_trio.protocol._fastframe.FastFrameDecoder
  python           orpheus_trio.protocol.frames.PythonFrameDecoder (the reference)
  json+base64      what a user writes by hand with the standard library
  orjson+pybase64  the same loop with the fastest parsers on PyPI
  memcpy           copying each piece once: the floor no decoder can beat

Each row decodes the same body and is checked to yield every chunk's PCM. The
hand-written rows pass validate=True, the strictness the decoders enforce. The
body is small enough to stay in cache, as data just read from a socket is;
--body-mb 32 measures data coming cold from memory instead.
Run: python bench/frames.py [--quick] [--body-mb MB] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pybase64

from orpheus_trio.protocol.frames import (
    BACKEND,
    Chunk,
    PythonFrameDecoder,
    encode_chunk,
    encode_eos,
    encode_metrics,
)

try:
    from orpheus_trio.protocol._fastframe import FastFrameDecoder
except ImportError:
    FastFrameDecoder = None

PIECE_BYTES = 16 * 1024
CHUNK_SAMPLES = (512, 2048, 24000)

# A decoder run: pieces in, (frames decoded, PCM bytes decoded) out.
Runner = Callable[[list[bytes]], tuple[int, int]]
# What the memcpy floor returns: it decodes nothing, so there is nothing to check.
UNCHECKED = (-1, -1)


def make_body(chunk_samples: int, body_bytes: int) -> tuple[bytes, int]:
    """An NDJSON body of about ``body_bytes``; returns it and its PCM byte count."""
    rng = random.Random(chunk_samples)
    line_bytes = len(encode_chunk(0, bytes(2 * chunk_samples)))
    count = max(1, body_bytes // line_bytes)
    lines = [encode_metrics(queue_depth=0, inflight=1, capacity=4)]
    lines += [
        encode_chunk(seq, rng.randbytes(2 * chunk_samples)) for seq in range(count)
    ]
    lines.append(encode_eos(count, count * chunk_samples))
    return b"".join(lines), count * 2 * chunk_samples


def pieces_of(body: bytes) -> list[bytes]:
    return [body[i : i + PIECE_BYTES] for i in range(0, len(body), PIECE_BYTES)]


def run_decoder(cls: type) -> Runner:
    def run(pieces: list[bytes]) -> tuple[int, int]:
        decoder = cls()
        frames = pcm = 0
        for piece in pieces:
            for frame in decoder.feed(piece):
                frames += 1
                if type(frame) is Chunk:
                    pcm += len(frame.pcm)
        decoder.close()
        return frames, pcm

    return run


def run_by_hand(
    loads: Callable[[bytes], object], b64decode: Callable[..., bytes]
) -> Runner:
    """The line splitter people write: append, split, keep the tail."""

    def run(pieces: list[bytes]) -> tuple[int, int]:
        frames = pcm = 0
        tail = b""
        for piece in pieces:
            lines = (tail + piece).split(b"\n")
            tail = lines.pop()
            for line in lines:
                if not line.strip():
                    continue
                obj = loads(line)
                assert isinstance(obj, dict)
                frames += 1
                if obj["type"] == "chunk":
                    pcm += len(b64decode(obj["audio"], validate=True))
        return frames, pcm

    return run


def run_memcpy(pieces: list[bytes]) -> tuple[int, int]:
    target = bytearray(PIECE_BYTES)
    for piece in pieces:
        target[: len(piece)] = piece
    return UNCHECKED


def rows() -> list[tuple[str, Runner]]:
    found: list[tuple[str, Runner]] = []
    if FastFrameDecoder is not None:
        found.append(("cython", run_decoder(FastFrameDecoder)))
    found += [
        ("python", run_decoder(PythonFrameDecoder)),
        ("json+base64", run_by_hand(json.loads, base64.b64decode)),
        ("orjson+pybase64", run_by_hand(orjson.loads, pybase64.b64decode)),
        ("memcpy", run_memcpy),
    ]
    return found


def best_seconds(
    runners: list[tuple[str, Runner]],
    pieces: list[bytes],
    passes: int,
    repeats: int,
    want: tuple[int, int],
) -> dict[str, float]:
    """Best time per pass of each row; rows take turns so a noisy moment hits them all alike."""
    best = dict.fromkeys((name for name, _ in runners), float("inf"))
    for _ in range(repeats):
        for name, runner in runners:
            got = runner(pieces)  # untimed: checks the result and warms the cache
            if got != UNCHECKED and got != want:
                raise AssertionError(
                    f"{name} decoded {got} (frames, PCM bytes), expected {want}"
                )
            start = time.perf_counter()
            for _ in range(passes):
                runner(pieces)
            best[name] = min(best[name], (time.perf_counter() - start) / passes)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer passes and repeats (< 30 s)"
    )
    parser.add_argument(
        "--body-mb",
        type=float,
        default=2.0,
        help="NDJSON body size (default 2: cache-resident like data fresh from a socket; "
        "32 shows the cold-memory case)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the rows as JSON"
    )
    args = parser.parse_args()
    passes, repeats = (2, 5) if args.quick else (10, 15)

    results: list[dict[str, float | int | str]] = []
    mb_per_s: dict[tuple[str, int], float] = {}
    print(
        f"default backend: {BACKEND}; {args.body_mb:g} MB body in {PIECE_BYTES // 1024} KiB pieces; "
        f"best of {repeats} x {passes} passes"
    )
    print(
        f"{'decoder':<16} {'chunk':>6} {'MB/s':>9} {'frames/s':>11} {'cython is':>10}"
    )
    for chunk_samples in CHUNK_SAMPLES:
        body, pcm_bytes = make_body(chunk_samples, int(args.body_mb * 1e6))
        want = (body.count(b"\n"), pcm_bytes)
        best = best_seconds(rows(), pieces_of(body), passes, repeats, want)
        for name, seconds in best.items():
            mb_s = len(body) / seconds / 1e6
            frames_s = want[0] / seconds
            mb_per_s[name, chunk_samples] = mb_s
            cython = mb_per_s.get(("cython", chunk_samples), float("nan"))
            print(
                f"{name:<16} {chunk_samples:>6} {mb_s:>9.0f} {frames_s:>11.0f} {cython / mb_s:>9.1f}x"
            )
            results.append(
                {
                    "name": name,
                    "chunk_samples": chunk_samples,
                    "mb_per_s": round(mb_s, 1),
                    "frames_per_s": round(frames_s, 1),
                }
            )
        print()

    summarize(mb_per_s)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def summarize(mb_per_s: dict[tuple[str, int], float]) -> None:
    """The issue's targets, for 2048-sample chunks."""
    if ("cython", 2048) not in mb_per_s:
        print("cython decoder not built: no targets to check")
        return
    fast = mb_per_s["cython", 2048]
    by_hand = mb_per_s["json+base64", 2048]
    orjson_line = mb_per_s["orjson+pybase64", 2048]
    checks = [
        (f"cython {fast / 1000:.2f} GB/s >= 3 GB/s", fast >= 3000),
        (f"cython {fast / by_hand:.1f}x json+base64 >= 20x", fast >= 20 * by_hand),
        (
            f"cython {fast / orjson_line:.1f}x orjson+pybase64 >= 3x",
            fast >= 3 * orjson_line,
        ),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")


if __name__ == "__main__":
    raise SystemExit(main())
