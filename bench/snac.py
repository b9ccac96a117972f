"""SNAC decode throughput and time to first audio: ours vs the reference algorithm.

    python bench/snac.py [--quick] [--json PATH] [--threads 2] [--device cpu|cuda]
                         [--dtype float32|float16|bfloat16] [--snac DIR]

Both algorithms decode the same token streams, which arrive as fast as the
decoder takes them (decode-bound: an infinitely fast LLM), for 1, 8, 32 and
128 concurrent streams. Each stream decodes utterances of ``--frames`` frames
(default 36, about 3 s: a sentence) back to back, so start-up and end of
utterance count as they do in use; each configuration runs for a fixed
wall-clock budget.

- ours: ``pcm_from_tokens`` per stream, all streams sharing one
  ``BatchingDecoder`` (exact-context windows, hops ramping up to 16 frames).
- reference: the widely used Orpheus decoder: snac's own model and decode
  (weight norm not folded), a 28-token (4-frame) window decoded per new frame,
  keeping samples 2048:4096, one window per call; windows of concurrent
  streams take turns on the one model (a capacity limiter of 1).

``--free-decode`` swaps the decode for one that costs nothing (silence of the
right length) and runs ours alone: the ceiling the host side (token
assembly, planning, batching, the hand-offs between tasks and the worker
thread) puts on any decoder, a GPU's included.

Reported: aggregate audio seconds per wall second (x real time), time to first
audio (p50 / max over streams; streams still silent at the deadline count as
the full budget) and, separately, each algorithm's SNR against the
whole-utterance decode (noise blocks off). Without ``--snac`` a random-init
24 kHz SNAC (the real architecture) is built in a temporary directory.
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
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This file is named like the `snac` package: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders live with the tests

import numpy as np
import torch
import trio
from _support_snac import save_random_snac

from orpheus_trio.local.batching import BatchingDecoder
from orpheus_trio.local.snac_decoder import SnacDecoder, float_to_pcm16
from orpheus_trio.local.stream_decode import StreamingDecoder, pcm_from_tokens
from orpheus_trio.local.tokens import token_ids_from_codes

SAMPLE_RATE = 24000


@dataclass
class Run:
    algorithm: str
    streams: int
    wall_s: float = 0.0
    audio_s: float = 0.0
    x_realtime: float = 0.0
    ttfa_p50_ms: float = 0.0
    ttfa_max_ms: float = 0.0
    streams_with_audio: int = 0
    ttfa_s: list[float] = field(default_factory=list, repr=False)


def random_ids(n_frames: int, seed: int) -> list[int]:
    frames = np.random.default_rng(seed).integers(0, 4096, size=(n_frames, 7))
    return token_ids_from_codes(frames)


async def token_stream(ids: list[int]) -> AsyncIterator[int]:
    for i, token in enumerate(ids):
        if i % 7 == 0:
            await trio.lowlevel.checkpoint()
        yield token


# --- the reference algorithm ------------------------------------------------------


def reference_code(token_id: int, count: int) -> int | None:
    """The reference's per-token mapping: position from a running count."""
    code = token_id - 128266 - (count % 7) * 4096
    return code if code > 0 else None  # the reference's `> 0` drops code 0


def reference_convert(model: Any, window: list[int], device: torch.device) -> bytes | None:
    """The reference's convert_to_audio: 28 codes, decode 4 frames, keep the second."""
    frames = np.array(window, dtype=np.int64).reshape(-1, 7)
    codes = [torch.from_numpy(c)[None].to(device) for c in deinterleave_unchecked(frames)]
    if any(bool(torch.any((c < 0) | (c > 4096))) for c in codes):
        return None
    with torch.inference_mode():
        audio = model.decode(codes)
    return float_to_pcm16(audio[0, 0, 2048:4096].float().cpu().numpy())


def deinterleave_unchecked(frames: np.ndarray) -> list[np.ndarray]:
    return [frames[:, 0], frames[:, [1, 4]].reshape(-1), frames[:, [2, 3, 5, 6]].reshape(-1)]


async def our_stream(batcher: BatchingDecoder, ids: list[int], on_chunk: Callable[[int], None]) -> None:
    async for chunk in pcm_from_tokens(token_stream(ids), batcher):
        on_chunk(len(chunk) // 2)


async def reference_stream(
    ids: list[int],
    on_chunk: Callable[[int], None],
    *,
    convert: Callable[[list[int]], bytes | None],
    limiter: trio.CapacityLimiter,
) -> None:
    buffer: list[int] = []
    count = 0
    async for token in token_stream(ids):
        code = reference_code(token, count)
        if code is None:
            continue
        buffer.append(code)
        count += 1
        if count % 7 == 0 and count > 27:
            chunk = await trio.to_thread.run_sync(convert, buffer[-28:], limiter=limiter)
            if chunk:
                on_chunk(len(chunk) // 2)


# --- measurement ----------------------------------------------------------------------


async def measure(
    algorithm: str,
    streams: int,
    budget_s: float,
    n_frames: int,
    start_stream: Callable[[list[int], Callable[[int], None]], Any],
) -> Run:
    run = Run(algorithm, streams)
    samples = 0
    first: dict[int, float] = {}
    t0 = trio.current_time()

    async def one(index: int) -> None:
        def on_chunk(n: int) -> None:
            nonlocal samples
            samples += n
            first.setdefault(index, trio.current_time() - t0)

        for utterance in range(1_000_000):  # back to back until the budget ends
            await start_stream(random_ids(n_frames, seed=index * 1_000_000 + utterance), on_chunk)

    with trio.move_on_after(budget_s):
        async with trio.open_nursery() as nursery:
            for index in range(streams):
                nursery.start_soon(one, index)
    run.wall_s = trio.current_time() - t0
    run.audio_s = samples / SAMPLE_RATE
    run.x_realtime = run.audio_s / run.wall_s
    run.streams_with_audio = len(first)
    run.ttfa_s = [first.get(i, run.wall_s) for i in range(streams)]
    run.ttfa_p50_ms = 1000 * statistics.median(run.ttfa_s)
    run.ttfa_max_ms = 1000 * max(run.ttfa_s)
    return run


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def measure_snr(decoder: SnacDecoder, n_frames: int) -> dict[str, float]:
    """Streamed vs whole decode (noise off) for ours and for the reference windows."""
    frames = np.random.default_rng(99).integers(0, 4096, size=(n_frames, 7))
    whole = decoder.decode(frames)
    stream = StreamingDecoder(decoder)
    for k in range(n_frames):
        stream.push(frames[k : k + 1])
    stream.flush()
    ours = stream.pop_audio()
    # The reference emits frame k-3 from window [k-3, k+1) once frame k arrives (k >= 3):
    # frames 1 .. n-3, each from a 4-frame window.
    pieces = [decoder.decode(frames[k - 3 : k + 1])[2048:4096] for k in range(3, n_frames)]
    ref = np.concatenate(pieces)
    return {
        "ours_db": snr_db(whole, ours),
        "reference_db": snr_db(whole[2048 : 2048 + len(ref)], ref),
        "reference_frames_emitted": len(pieces),
        "frames": n_frames,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        snac_dir = Path(args.snac) if args.snac else save_random_snac(Path(tmp) / "snac")[0]
        decoder = SnacDecoder.from_pretrained(snac_dir, device=device, dtype=args.dtype, compile=args.compile)
        import snac

        reference_model = snac.SNAC.from_pretrained(str(snac_dir)).eval().to(device)
    # Warm-up: each new input shape costs a first call (oneDNN / cuDNN plans);
    # one utterance of ours covers its window shapes, one window the reference's.
    warm = StreamingDecoder(decoder)
    warm.push(np.random.default_rng(0).integers(0, 4096, size=(args.frames, 7)))
    warm.flush()
    # Batches of more than one window are another shape (with --compile, another graph).
    decoder.decode_batch(np.random.default_rng(1).integers(0, 4096, size=(2, 4, 7)))
    reference_convert(reference_model, [1] * 28, device)

    convert = functools.partial(reference_convert, reference_model, device=device)
    if args.free_decode:
        decoder.decode_batch = functools.partial(free_decode, decoder)  # type: ignore[method-assign]
    runs: list[Run] = []
    for streams in args.streams:
        async with BatchingDecoder(
            decoder,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_batch_latents=args.max_batch_latents,
        ) as batcher:
            ours = functools.partial(our_stream, batcher)
            runs.append(await measure("ours", streams, args.budget, args.frames, ours))
        print_run(runs[-1])
        if args.free_decode:
            continue
        reference = functools.partial(reference_stream, convert=convert, limiter=trio.CapacityLimiter(1))
        runs.append(await measure("reference", streams, args.budget, args.frames, reference))
        print_run(runs[-1])
    snr = measure_snr(decoder, args.snr_frames) if not args.free_decode else None
    return {
        "bench": "snac",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": device_name(device),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "budget_s": args.budget,
        "cpu_count": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "max_batch": args.max_batch,
        "max_batch_latents": batcher.max_batch_latents,
        "runs": [{k: v for k, v in asdict(r).items() if k != "ttfa_s"} for r in runs],
        "free_decode": args.free_decode,
        "speedup": {} if args.free_decode else {str(s): ratio(runs, s) for s in args.streams},
        "snr": snr,
    }


def free_decode(
    decoder: SnacDecoder, frames: np.ndarray, latent_start: int = 0, latent_stop: int | None = None
) -> np.ndarray:
    """What ``decode_batch`` returns, at no cost: silence of the right shape."""
    stop = frames.shape[1] * decoder.latents_per_frame if latent_stop is None else latent_stop
    return np.zeros((frames.shape[0], (stop - latent_start) * decoder.samples_per_latent), np.float32)


def ratio(runs: list[Run], streams: int) -> float:
    by = {(r.algorithm, r.streams): r for r in runs}
    ref = by[("reference", streams)].x_realtime
    return by[("ours", streams)].x_realtime / ref if ref > 0 else math.inf


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def print_run(run: Run) -> None:
    print(
        f"{run.algorithm:>10} {run.streams:>7} {run.audio_s:>9.2f} {run.wall_s:>7.2f} "
        f"{run.x_realtime:>8.2f}x {run.ttfa_p50_ms:>10.0f} {run.ttfa_max_ms:>10.0f} "
        f"{run.streams_with_audio:>5}/{run.streams}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short budgets (< 30 s in all)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the decoder")
    parser.add_argument("--snac", help="a SNAC checkpoint directory (default: random-init 24 kHz)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--budget", type=float, help="seconds per configuration")
    parser.add_argument("--frames", type=int, default=36, help="frames per utterance (default 36, ~3 s)")
    parser.add_argument("--max-batch", type=int, default=64, help="windows gathered at once")
    parser.add_argument("--max-batch-latents", type=int, help="cap per decode call (default: library's)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--snr-frames", type=int, default=24)
    parser.add_argument(
        "--free-decode", action="store_true", help="decoding costs nothing: the host side's ceiling"
    )
    args = parser.parse_args()
    if args.budget is None:
        args.budget = 2.0 if args.quick else 10.0
    torch.set_num_threads(args.threads)
    print(f"{'algorithm':>10} {'streams':>7} {'audio_s':>9} {'wall_s':>7} {'x_rt':>9} {'ttfa_p50':>10} {'ttfa_max':>10} {'heard':>9}")
    result = trio.run(main_async, args)
    print(
        f"device: {result['device']}, dtype {result['dtype']}, max_batch {result['max_batch']}, "
        f"max_batch_latents {result['max_batch_latents']}, "
        f"1-min load average before/after {result['load_average_1min']} on {result['cpu_count']} cores"
    )
    for streams, speedup in result["speedup"].items():
        print(f"throughput ours / reference at {streams} streams: {speedup:.2f}x")
    snr = result["snr"]
    if snr is None:
        print("decode cost nothing (--free-decode): these are the host side's ceilings")
    else:
        print(
            f"SNR vs whole decode ({snr['frames']} frames, noise off): ours {snr['ours_db']:.1f} dB, "
            f"reference {snr['reference_db']:.1f} dB "
            f"(it emits {snr['reference_frames_emitted']} of {snr['frames']} frames)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
