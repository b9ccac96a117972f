"""Gateway overhead: time to first audio and CPU per stream, through a gateway vs direct.

A synthetic worker (``orpheus-trio serve``) and a gateway in front of it
(``orpheus-trio gateway``, hedging off so every stream is one upstream attempt)
run in their own processes; their CPU time is measured apart (psutil) while
this process drives the load with bench/server.py's lean raw HTTP/1.1 client.
Each stream is 2.5 s of audio (25 chunks of 2400 samples) at full speed, 1 and
32 streams at a time, first direct to the worker, then through the gateway.

- ``added first audio``: median time to first chunk through the gateway minus direct.
- ``gateway CPU/stream``: the gateway process's CPU time per stream (the cost of
  forwarding: its HTTP server side, the upstream client, checking and relaying
  the worker's chunk lines). Targets (issue 18): at most half the worker's, at
  1 and 32 streams; added first audio at most 2 ms at 1 stream and 25% of the
  direct p50 at 32.

With ``--baseline SRC`` (the ``src/`` of another checkout), a second worker
and gateway pair runs from it and every row is measured on both pairs,
alternating, in the same run.

    .venv/bin/python bench/gateway.py [--quick] [--json PATH] [--baseline SRC]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from server import SYNTHETIC_BODY, ServerProcess, stream_many


class GatewayProcess(ServerProcess):
    """``orpheus-trio gateway`` on a free port in front of ``upstream``."""

    def __init__(
        self, upstream: ServerProcess, options: Sequence[str] = (), *, src: str | None = None
    ) -> None:
        self._start(
            "gateway",
            [
                "--upstream", f"http://{upstream.host}:{upstream.port}",
                "--hedge-ttfb-ms", "0", *options,
            ],
            listening="upstreams",
            src=src,
        )  # fmt: skip


async def drive(
    target: ServerProcess,
    measured: dict[str, ServerProcess],
    concurrency: int,
    total: int,
) -> dict[str, Any]:
    """Stream ``total`` requests to ``target``, ``concurrency`` at a time."""
    cpu_before = {name: p.cpu_s() for name, p in measured.items()}
    results, wall = await stream_many(target, SYNTHETIC_BODY, concurrency, total)
    assert all(samples == 25 * 2400 for _, samples in results)
    first_chunks = [first for first, _ in results]
    row: dict[str, Any] = {
        "concurrency": concurrency,
        "streams": total,
        "streams_per_s": round(total / wall, 1),
        "first_audio_ms_p50": round(1000 * statistics.median(first_chunks), 2),
        "first_audio_ms_p90": round(
            1000 * statistics.quantiles(first_chunks, n=10)[-1], 2
        ),
    }
    for name, process in measured.items():
        cpu = process.cpu_s() - cpu_before[name]
        row[f"{name}_cpu_ms_per_stream"] = round(1000 * cpu / total, 3)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer streams (< 30 s)")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write results as JSON"
    )
    parser.add_argument(
        "--baseline", metavar="SRC",
        help="also measure a worker and gateway run from this src/ directory",
    )  # fmt: skip
    args = parser.parse_args()
    scale = 1 if args.quick else 5
    rows: list[dict[str, Any]] = []
    pairs: dict[str, tuple[ServerProcess, GatewayProcess]] = {}
    sources = {"this": None, **({"baseline": args.baseline} if args.baseline else {})}
    try:
        for name, src in sources.items():
            worker = ServerProcess("synthetic", src=src)
            pairs[name] = (worker, GatewayProcess(worker, src=src))
        for worker, gateway in pairs.values():
            trio.run(drive, gateway, {}, 4, 20)  # warm up both, and the gateway's pool
        for concurrency, total in ((1, 100 * scale), (32, 320 * scale)):
            for name in sorted(pairs):  # baseline first, then this one
                worker, gateway = pairs[name]
                direct = trio.run(drive, worker, {"worker": worker}, concurrency, total)
                via = trio.run(
                    drive,
                    gateway,
                    {"worker": worker, "gateway": gateway},
                    concurrency,
                    total,
                )
                rows.append(
                    {
                        "server": name,
                        "concurrency": concurrency,
                        "direct": direct,
                        "gateway": via,
                        "added_first_audio_ms_p50": round(
                            via["first_audio_ms_p50"] - direct["first_audio_ms_p50"], 2
                        ),
                    }
                )
    finally:
        for worker, gateway in pairs.values():
            gateway.stop()
            worker.stop()

    print("synthetic worker at full speed, 2.5 s of audio per stream; gateway hedging off")
    print(
        f"{'server':>8} {'concurrent':>10} {'path':>8} {'streams/s':>10} {'first audio p50':>16} "
        f"{'p90':>10} {'worker CPU/stream':>18} {'gateway CPU/stream':>19}"
    )
    for row in rows:
        for path in ("direct", "gateway"):
            r = row[path]
            gateway_cpu = r.get("gateway_cpu_ms_per_stream")
            print(
                f"{row['server']:>8} {row['concurrency']:>10} {path:>8} {r['streams_per_s']:>10} "
                f"{r['first_audio_ms_p50']:>13} ms {r['first_audio_ms_p90']:>7} ms "
                f"{r['worker_cpu_ms_per_stream']:>15} ms "
                f"{'-' if gateway_cpu is None else f'{gateway_cpu} ms':>19}"
            )
        print(
            f"{'':>8} {'':>10} {'added':>8} {'':>10} {row['added_first_audio_ms_p50']:>13} ms"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        results = {"rows": rows}
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
