"""On-box synthesis speed: LLM tokens/s, time to first audio, real-time factor.

    python bench/local.py [--quick] [--json PATH] [--device cpu|cuda]
                          [--model DIR --snac DIR] [--tokens N] [--streams 1,4]
                          [--threads N]

Without ``--model``/``--snac`` it builds the test suite's tiny Llama (1 layer,
64 hidden units, full Orpheus vocabulary) scripted to repeat valid audio frames,
and a random-init 24 kHz SNAC (the real decoder architecture), in a temporary
directory. With the tiny model the LLM costs almost nothing, so the figures
show the pipeline's overhead and the SNAC decoder's cost, not Orpheus' speed;
pass real checkpoints (on a GPU) for that.

Reported per configuration:

- ``llm tok/s``: tokens per second from :meth:`OrpheusLM.generate` alone
  (7 tokens make 2048 samples, so real time needs ~82 tok/s per stream);
- ``ttfa ms``: time from the request to the first PCM piece (p50 over streams);
- ``rtf``: wall time / audio time for one stream (below 1: faster than real time);
- ``x real time``: audio seconds produced per wall second, all streams together.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import trio

ROOT = Path(__file__).resolve().parent.parent
# bench/snac.py would shadow the snac package: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders live with the tests

from orpheus_trio.local.llm import OrpheusLM, SamplingParams
from orpheus_trio.local.synthesizer import LocalSynthesizer, TruncatedSpeechWarning

SAMPLE_RATE = 24_000
TEXT = "the quick brown fox , hello world ."


@dataclass
class Row:
    config: str
    streams: int
    tokens: int
    llm_tokens_per_s: float
    ttfa_p50_ms: float
    ttfa_max_ms: float
    rtf: float
    x_realtime: float
    audio_s: float
    wall_s: float


def build_tiny(directory: Path) -> tuple[Path, Path]:
    from _support_llm import audio_script, save_tiny_orpheus
    from _support_snac import save_random_snac

    model = save_tiny_orpheus(directory / "llm", script=audio_script(8), loop=True)
    snac = save_random_snac(directory / "snac")[1]
    return model, snac


def llm_tokens_per_s(lm: OrpheusLM, tokens: int) -> float:
    prompt = lm.prompt_ids(TEXT, "tara")
    params = SamplingParams(max_tokens=tokens, seed=0)
    started = time.perf_counter()
    produced = sum(1 for _ in lm.generate(prompt, params))
    return produced / (time.perf_counter() - started)


async def one_stream(synth: LocalSynthesizer, tokens: int) -> tuple[float, float, int]:
    """(time to first audio, wall time, samples) for one utterance."""
    started = trio.current_time()
    first: float | None = None
    samples = 0
    async with synth.open_stream(TEXT, "tara", max_tokens=tokens, seed=0) as audio:
        async for pcm in audio:
            if first is None:
                first = trio.current_time() - started
            samples += len(pcm) // 2
    return (
        (first if first is not None else float("nan")),
        trio.current_time() - started,
        samples,
    )


async def pipeline(
    synth: LocalSynthesizer, streams: int, tokens: int
) -> tuple[list[float], float, float, int]:
    results: list[tuple[float, float, int]] = []

    async def run() -> None:
        results.append(await one_stream(synth, tokens))

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(streams):
            nursery.start_soon(run)
    wall = trio.current_time() - started
    ttfas = [r[0] for r in results]
    per_stream_rtf = statistics.mean(r[1] / (r[2] / SAMPLE_RATE) for r in results)
    return ttfas, wall, per_stream_rtf, sum(r[2] for r in results)


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} torch threads)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--model", help="Orpheus checkpoint (default: the tiny test model)"
    )
    parser.add_argument(
        "--snac", help="SNAC checkpoint (default: random-init 24 kHz SNAC)"
    )
    parser.add_argument(
        "--tokens", type=int, help="tokens per utterance (multiple of 7)"
    )
    parser.add_argument("--streams", help="comma-separated concurrent stream counts")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.model is None) != (args.snac is None):
        parser.error("--model and --snac go together")
    tokens = args.tokens or (7 * 24 if args.quick else 7 * 120)  # ~2 s / ~10 s of audio
    streams = [
        int(s) for s in (args.streams or ("1,2" if args.quick else "1,4")).split(",")
    ]
    warnings.simplefilter(
        "ignore", TruncatedSpeechWarning
    )  # the looping model is cut on purpose

    with tempfile.TemporaryDirectory(prefix="bench-local-") as scratch:
        model, snac = (
            (args.model, args.snac) if args.model else build_tiny(Path(scratch))
        )
        synth = LocalSynthesizer.load(model, snac, device=args.device)
        llm_rate = statistics.median(
            llm_tokens_per_s(synth.lm, tokens) for _ in range(1 if args.quick else 3)
        )
        rows = []
        trio.run(one_stream, synth, 14)  # warm-up: first-call allocations, thread start
        for count in streams:
            ttfas, wall, rtf, samples = trio.run(pipeline, synth, count, tokens)
            audio_s = samples / SAMPLE_RATE
            rows.append(
                Row(
                    config="tiny" if args.model is None else Path(str(model)).name,
                    streams=count,
                    tokens=tokens,
                    llm_tokens_per_s=round(llm_rate, 1),
                    ttfa_p50_ms=round(statistics.median(ttfas) * 1000, 1),
                    ttfa_max_ms=round(max(ttfas) * 1000, 1),
                    rtf=round(rtf, 3),
                    x_realtime=round(audio_s / wall, 2),
                    audio_s=round(audio_s, 2),
                    wall_s=round(wall, 2),
                )
            )

    device = device_description(args.device)
    print(f"device: {device}; {tokens} tokens per utterance")
    header = f"{'model':<8}{'streams':>8}{'llm tok/s':>11}{'ttfa p50':>10}{'ttfa max':>10}{'rtf':>8}{'x rt':>8}"
    print(header)
    for row in rows:
        print(
            f"{row.config:<8}{row.streams:>8}{row.llm_tokens_per_s:>11.1f}{row.ttfa_p50_ms:>8.1f}ms"
            f"{row.ttfa_max_ms:>8.1f}ms{row.rtf:>8.3f}{row.x_realtime:>8.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "bench": "local",
                    "when": datetime.datetime.now(datetime.UTC).isoformat(
                        timespec="seconds"
                    ),
                    "device": device,
                    "quick": args.quick,
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
