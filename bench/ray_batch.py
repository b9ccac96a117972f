"""The Ray batch pipeline against ``orpheus-trio batch`` through a local server, side by side.

    PY=$(./scripts/install-vllm.sh)
    $PY bench/ray_batch.py [--quick] [--json PATH] [--server-python PATH]

Same model and engine on both sides: the tests' scripted tiny Orpheus (9 frames, 0.77 s of audio
per row) through transformers, and a random-init 24 kHz SNAC (the real architecture, so decode
costs what it costs). Rows are short sentences, temperature 0.

- ``orpheus-trio batch``: the HTTP batch command with ``--model/--snac`` (its embedded local
  server), run with ``--server-python`` (default: the project's venv, which has the server's
  dependencies), concurrency 4.
- Ray: ``run_batch`` on a local Ray (8 logical CPUs on however many cores there are), engine ``transformers`` (1 actor), with 1,
  2 and 4 decode actors. Each run includes its actors' start (loading torch, the model, SNAC).
- Decode alone, in this process: CPU seconds per audio second of the pipeline's own work (SNAC
  decode of whole utterances + FLAC encoding, no LLM), and whole-utterance vs streaming-window
  decode (the streaming decoder's exact-context windows, hop 16) of the same frames.

Reported: rows per second and audio seconds per wall second of each; the decode figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/snac.py would shadow the snac package; the tiny model builders live with the tests.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
# Ray's workers import the package too: they inherit the environment, not sys.path.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

FRAMES = 9  # the most a scripted model holds (63 distinct tokens)
TEXTS = ["hello world", "the quick brown fox", "hello , world .", "quick fox"]


def build(root: Path) -> tuple[Path, Path]:
    from _support_llm import audio_script, save_tiny_orpheus
    from _support_snac import save_random_snac

    model = save_tiny_orpheus(root / "model", script=audio_script(FRAMES))
    return model, save_random_snac(root / "snac")[1]


def bench_http_batch(python: str, rows: Path, model: Path, snac: Path, out: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [python, "-m", "orpheus_trio.cli.dispatch", "batch", str(rows), "-d", str(out),
         "--model", str(model), "--snac", str(snac), "-c", "4", "--no-progress", "--temperature", "0"],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def bench_ray(rows: Path, model: Path, snac: Path, out: Path, actors: int) -> tuple[float, float]:
    from orpheus_trio.integrations.ray import BatchConfig, read_rows, run_batch

    config = BatchConfig(out_dir=out, snac=str(snac), engine="transformers", model=str(model),
                         decode_actors=actors)
    summary = run_batch(read_rows(rows), config)
    assert summary.failed == 0, summary.render()
    return summary.wall_s, summary.audio_s


def bench_decode(snac: Path, utterances: int) -> dict[str, float]:
    import numpy as np

    from orpheus_trio.integrations.ray.stages import encode
    from orpheus_trio.local.snac_decoder import SnacDecoder, float_to_pcm16
    from orpheus_trio.local.stream_decode import StreamPlanner

    decoder = SnacDecoder.from_pretrained(snac)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4096, size=(utterances, FRAMES * 4, 7))  # ~3 s utterances
    audio_s = utterances * FRAMES * 4 * 2048 / 24000
    decoder.decode_batch(frames[:1])  # warm-up

    def best_of_3(work: Any) -> tuple[float, float]:
        """The least (wall, CPU) seconds of three runs: the shared machine adds noise, never speed."""
        runs = []
        for _ in range(3):
            wall, cpu = time.monotonic(), time.process_time()
            work()
            runs.append((time.monotonic() - wall, time.process_time() - cpu))
        return min(r[0] for r in runs), min(r[1] for r in runs)

    pcm: list[bytes] = []

    def whole() -> None:
        pcm[:] = [float_to_pcm16(a) for a in decoder.decode_batch(frames)]

    def whole_one_by_one() -> None:
        for f in frames:
            float_to_pcm16(decoder.decode(f))

    def windowed() -> None:
        """The streaming decoder's exact-context windows (hop 16 frames), planned for whole
        utterances at once, each window one SNAC call."""
        for f in frames:
            planner = StreamPlanner.for_decoder(decoder, first_hop=16, max_hop=16)
            planner.push(f)
            planner.finish()
            while (window := planner.next_window()) is not None:
                window.keep(decoder.decode_batch(window.frames[None], window.latent_start, window.latent_stop)[0])

    whole_wall, whole_cpu = best_of_3(whole)
    single_wall, single_cpu = best_of_3(whole_one_by_one)
    windowed_wall, windowed_cpu = best_of_3(windowed)
    flac_wall, flac_cpu = best_of_3(lambda: [encode(p, "flac") for p in pcm])
    return {
        "audio_s": audio_s,
        "whole_decode_cpu_per_audio_s": whole_cpu / audio_s,
        "whole_decode_wall_per_audio_s": whole_wall / audio_s,
        "whole_one_by_one_cpu_per_audio_s": single_cpu / audio_s,
        "whole_one_by_one_wall_per_audio_s": single_wall / audio_s,
        "windowed_decode_cpu_per_audio_s": windowed_cpu / audio_s,
        "windowed_decode_wall_per_audio_s": windowed_wall / audio_s,
        "flac_cpu_per_audio_s": flac_cpu / audio_s,
        "pipeline_cpu_per_audio_s": (whole_cpu + flac_cpu) / audio_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rows")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--server-python", default="/work/main/.venv/bin/python")
    args = parser.parse_args()
    count = 16 if args.quick else 96
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        model, snac = build(root)
        rows = root / "rows.txt"
        rows.write_text("".join(f"{TEXTS[i % 4]}\n" for i in range(count)))
        audio_s = count * FRAMES * 2048 / 24000
        results: dict[str, Any] = {"rows": count, "audio_s_per_row": FRAMES * 2048 / 24000, "runs": []}
        wall = bench_http_batch(args.server_python, rows, model, snac, root / "http")
        results["runs"].append({"name": "orpheus-trio batch (local server, c=4)", "wall_s": wall,
                                "rows_per_s": count / wall, "audio_s_per_s": audio_s / wall})
        # Logical CPUs: room for 4 decode actors beside the LLM actor and the light stages.
        ray.init(num_cpus=8, log_to_driver=False, include_dashboard=False)
        try:
            for actors in (1, 2, 4):
                wall, made = bench_ray(rows, model, snac, root / f"ray-{actors}", actors)
                results["runs"].append({"name": f"ray, {actors} decode actor(s)", "wall_s": wall,
                                        "rows_per_s": count / wall, "audio_s_per_s": made / wall})
        finally:
            ray.shutdown()
        results["decode"] = bench_decode(snac, 4 if args.quick else 16)
    print(f"{'run':44} {'wall s':>8} {'rows/s':>8} {'audio s/s':>10}")
    for run in results["runs"]:
        print(f"{run['name']:44} {run['wall_s']:8.1f} {run['rows_per_s']:8.2f} {run['audio_s_per_s']:10.2f}")
    d = results["decode"]
    print(f"{'decode (per audio second)':44} {'wall s':>8} {'CPU s':>8}")
    for name, key in (("whole utterances, batched", "whole_decode"),
                      ("whole utterances, one at a time", "whole_one_by_one"),
                      ("streaming windows (hop 16, exact context)", "windowed_decode")):
        print(f"{name:44} {d[key + '_wall_per_audio_s']:8.3f} {d[key + '_cpu_per_audio_s']:8.3f}")
    print(f"pipeline's own CPU s per audio s (batched decode + FLAC): {d['pipeline_cpu_per_audio_s']:.3f} "
          f"(FLAC {d['flac_cpu_per_audio_s']:.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
