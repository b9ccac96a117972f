"""Runs Ray batches for tests/test_ray_*.py inside the vLLM + Ray environment (a subprocess).

Usage: ``python tests/_ray_driver.py SPEC.json``. The spec: ``{"ray_cpus": N, "runs": [RUN, ...],
"result": PATH}``; a RUN: ``{"input", "out", "engine", "model", "snac", "unblock" (a folder
to remove before the run), "kill_decode_after" (SIGKILL a decode actor's process once the
manifest holds that many lines)}``. All runs share one Ray start. Writes, per run, the summary
and the seconds it took to ``result``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def decode_actor_pids() -> list[int]:
    """Ray titles an actor's process after its class: ``ray::MapWorker(MapBatches(DecodeStage))``.
    Only processes of this run count (they carry this driver's environment marker)."""
    mark = os.environ.get("ORPHEUS_TRIO_RAY_TEST_RUN", "").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if b"DecodeStage" in (entry / "cmdline").read_bytes() and mark in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


def kill_decode_actor_after(manifest: Path, lines: int, killed: list[int]) -> None:
    while not manifest.exists() or len(manifest.read_text().splitlines()) < lines:
        time.sleep(0.02)
    for pid in decode_actor_pids()[:1]:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)


def main() -> None:
    spec: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    import ray

    from orpheus_trio.integrations.ray import BatchConfig, read_rows, run_batch

    ray.init(num_cpus=spec["ray_cpus"], log_to_driver=False, include_dashboard=False)
    results = []
    try:
        for run in spec["runs"]:
            if run.get("unblock"):
                os.rmdir(run["unblock"])
            out = Path(run["out"])
            config = BatchConfig(
                out_dir=out,
                snac=run["snac"],
                engine=run["engine"],
                model=run.get("model"),
                llm_url=run.get("llm_url"),
                tokenizer=run.get("tokenizer"),
                decode_actors=run.get("decode_actors", 1),
                # Small batches: rows keep flowing while the kill lands, one batch in flight at most.
                llm_batch_size=run.get("batch_size", 16),
                decode_batch_size=run.get("batch_size", 8),
                vllm_engine_kwargs={"dtype": "float32", "max_model_len": 512},
                vllm_bundle={"CPU": 1},
                vllm_env={"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"},
            )
            killed: list[int] = []
            if run.get("kill_decode_after"):
                threading.Thread(
                    target=kill_decode_actor_after,
                    args=(out / "manifest.jsonl", run["kill_decode_after"], killed),
                    daemon=True,
                ).start()
            started = time.monotonic()
            summary = run_batch(read_rows(Path(run["input"])), config)
            results.append(
                {
                    "seconds": time.monotonic() - started,
                    "rows": summary.rows,
                    "written": summary.written,
                    "skipped": summary.skipped,
                    "failed": summary.failed,
                    "audio_s": summary.audio_s,
                    "killed": killed,
                    "summary": summary.render(),
                }
            )
            Path(spec["result"]).write_text(json.dumps(results))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
