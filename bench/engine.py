"""Worker throughput: the LLM on llama.cpp's server vs in-process ``transformers``, side by side.

    python bench/engine.py [--quick] [--json PATH] [--streams 1,8,32] [--tokens N]
                           [--decode snac,free] [--llama-server PATH]

Both paths run the same tiny scripted Orpheus Llama (the tests' model, looping
valid audio frames; converted to GGUF for llama-server) and the same SNAC
decoder behind one ``BatchingDecoder``, through :class:`LocalSynthesizer` in
this process; only the token source differs:

- ``engine``: :class:`~orpheus_trio.local.remote.RemoteLM` streaming
  ``/v1/completions`` from ``llama-server`` (``--parallel`` = the most
  streams, continuous batching, 1 thread), another process;
- ``in-process``: :class:`~orpheus_trio.local.llm.OrpheusLM`, one generate
  loop per stream on worker threads.

Reported per path, decode mode and concurrency: aggregate audio seconds per
wall second, time to first audio p50/p99, worker CPU (this process: for
``in-process`` that includes the LLM) and engine CPU (llama-server's
process) per audio second, and the engine path's throughput over the
in-process one's. ``--decode free`` swaps the SNAC decode for silence of the
right shape: the worker's own cost, as on a GPU where the decode leaves the CPU.

The tiny model makes the LLM nearly free on both paths, so these figures show
the token path's overhead and the SNAC cost, not Orpheus-3B's speed: with a
real model the in-process loop is what caps the streams (one forward pass per
token per stream), which is what the engine's batching removes.
Needs ``llama-server``: ``scripts/build-llama-server.sh``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import trio

ROOT = Path(__file__).resolve().parent.parent
# bench/snac.py would shadow the snac package: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders live with the tests

from orpheus_trio.local.batching import BatchingDecoder
from orpheus_trio.local.llm import OrpheusLM
from orpheus_trio.local.remote import RemoteLM
from orpheus_trio.local.snac_decoder import SnacDecoder
from orpheus_trio.local.synthesizer import LocalSynthesizer, TruncatedSpeechWarning
from orpheus_trio.local.token_source import TokenModel

SAMPLE_RATE = 24_000
TEXT = "the quick brown fox , hello world ."


@dataclass
class Row:
    path: str
    decode: str
    streams: int
    tokens: int
    audio_s_per_s: float
    ttfa_p50_ms: float
    ttfa_p99_ms: float
    worker_cpu_ms_per_audio_s: float
    engine_cpu_ms_per_audio_s: float | None
    audio_s: float
    wall_s: float
    vs_in_process: float | None = None


def free_decode(decoder: SnacDecoder, frames: np.ndarray, latent_start: int, latent_stop: int) -> np.ndarray:
    """What ``decode_batch`` returns, at no cost: silence of the right shape."""
    return np.zeros((frames.shape[0], (latent_stop - latent_start) * decoder.samples_per_latent), np.float32)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def run_streams(lm: TokenModel, snac: SnacDecoder, streams: int, tokens: int) -> tuple[list[float], float, int]:
    """(time to first audio of each stream, wall time, samples) for ``streams`` at once."""
    ttfas: list[float] = []
    samples = 0
    async with BatchingDecoder(snac) as batcher:
        synth = LocalSynthesizer(lm, batcher)

        async def one() -> None:
            nonlocal samples
            started = trio.current_time()
            first: float | None = None
            async with synth.open_stream(TEXT, "tara", max_tokens=tokens, seed=0) as audio:
                async for pcm in audio:
                    if first is None:
                        first = trio.current_time() - started
                    samples += len(pcm) // 2
            ttfas.append(first if first is not None else math.nan)

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one)
        wall = trio.current_time() - started
    return ttfas, wall, samples


def measure(
    path: str, decode: str, lm: TokenModel, snac: SnacDecoder, streams: int, tokens: int, engine: object | None
) -> Row:
    engine_cpu_before = engine.cpu_seconds() if engine is not None else 0.0  # type: ignore[attr-defined]
    cpu_before = time.process_time()
    ttfas, wall, samples = trio.run(run_streams, lm, snac, streams, tokens)
    worker_cpu = time.process_time() - cpu_before
    engine_cpu = engine.cpu_seconds() - engine_cpu_before if engine is not None else None  # type: ignore[attr-defined]
    audio_s = samples / SAMPLE_RATE
    return Row(
        path=path,
        decode=decode,
        streams=streams,
        tokens=tokens,
        audio_s_per_s=round(audio_s / wall, 2),
        ttfa_p50_ms=round(statistics.median(ttfas) * 1000, 1),
        ttfa_p99_ms=round(percentile(ttfas, 0.99) * 1000, 1),
        worker_cpu_ms_per_audio_s=round(worker_cpu / audio_s * 1000, 1),
        engine_cpu_ms_per_audio_s=None if engine_cpu is None else round(engine_cpu / audio_s * 1000, 1),
        audio_s=round(audio_s, 2),
        wall_s=round(wall, 2),
    )


def find_llama_server(given: str | None) -> Path:
    from _support_engine import BINARY_ENV, cache_dir

    for candidate in (given, os.environ.get(BINARY_ENV), str(cache_dir() / "bin/llama-server")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit("bench/engine.py needs llama-server: run scripts/build-llama-server.sh (or pass --llama-server)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--streams", default="1,8,32", help="comma-separated concurrent stream counts")
    parser.add_argument("--tokens", type=int, help="tokens per utterance (multiple of 7)")
    parser.add_argument("--decode", help="comma-separated: snac (the real decoder), free (decode costs nothing)")
    parser.add_argument("--llama-server", help="the llama-server binary (default: the build cache)")
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    tokens = args.tokens or (7 * 5 if args.quick else 7 * 24)  # ~0.4 s / ~2 s of audio per stream
    decodes = (args.decode or ("free" if args.quick else "free,snac")).split(",")
    binary = find_llama_server(args.llama_server)
    warnings.simplefilter("ignore", TruncatedSpeechWarning)  # the looping model is cut on purpose

    import torch
    from _support_engine import running_llama_server, write_gguf
    from _support_llm import audio_script, save_tiny_orpheus
    from _support_snac import save_random_snac

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as scratch:
        model = save_tiny_orpheus(Path(scratch) / "llm", script=audio_script(8), loop=True)
        snac_path = save_random_snac(Path(scratch) / "snac")[1]
        gguf = write_gguf(model, Path(scratch) / "tiny.gguf")
        in_process = OrpheusLM.load(model, device="cpu")
        with running_llama_server(
            gguf, slots=max(streams), ctx_per_slot=tokens + 256, threads=1, binary=binary
        ) as engine:
            remote = RemoteLM(engine.url)
            for decode in decodes:
                snac = SnacDecoder.from_pretrained(snac_path, device="cpu")
                if decode == "free":
                    snac.decode_batch = functools.partial(free_decode, snac)  # type: ignore[method-assign]
                for lm in (remote, in_process):  # warm-up: first-call allocations, threads
                    trio.run(run_streams, lm, snac, 1, 14)
                for count in streams:
                    ours = measure("engine", decode, remote, snac, count, tokens, engine)
                    theirs = measure("in-process", decode, in_process, snac, count, tokens, None)
                    ours.vs_in_process = round(ours.audio_s_per_s / theirs.audio_s_per_s, 2)
                    rows += [ours, theirs]
            trio.run(remote.aclose)

    print(f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; {tokens} tokens per stream; "
          "llama-server: 1 thread")  # fmt: skip
    header = (
        f"{'path':<11}{'decode':<7}{'streams':>8}{'audio s/s':>11}{'ttfa p50':>10}{'ttfa p99':>10}"
        f"{'worker ms/s':>13}{'engine ms/s':>13}{'vs in-proc':>12}"
    )
    print(header)
    for r in rows:
        engine_cpu = f"{r.engine_cpu_ms_per_audio_s:.1f}" if r.engine_cpu_ms_per_audio_s is not None else "-"
        ratio = f"{r.vs_in_process:.2f}x" if r.vs_in_process is not None else ""
        print(
            f"{r.path:<11}{r.decode:<7}{r.streams:>8}{r.audio_s_per_s:>11.2f}{r.ttfa_p50_ms:>8.1f}ms"
            f"{r.ttfa_p99_ms:>8.1f}ms{r.worker_cpu_ms_per_audio_s:>13.1f}{engine_cpu:>13}{ratio:>12}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "bench": "engine",
                    "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "device": "cpu",
                    "quick": args.quick,
                    "tokens": tokens,
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
