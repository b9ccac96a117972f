"""Hedging benchmark: time to first audio with hedging off vs on, in one run.

Four local synthetic workers (real sockets on 127.0.0.1). Every worker answers
its first chunk after ``--ttfb-ms``; a seeded 5% of the requests each worker
receives get a 10x slower first chunk. The same request load runs twice, with
hedging off and on; the table shows p50/p99/p99.9 time to first audio (as the
client sees it, hedges included) and extra requests (hedges + failovers) in %.

Target: p99 with hedging <= 0.4 x p99 without; extra requests <= 10%.

    .venv/bin/python bench/hedging.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import trio

from orpheus_trio import OrpheusTTS
from orpheus_trio.server import ServerConfig, serve
from orpheus_trio.server.engines.synthetic import ScheduledFault, SyntheticEngine


async def run_mode(
    urls: list[str], hedge_ms: float | None, requests: int, concurrency: int
) -> dict[str, Any]:
    ttfbs: list[float] = []
    limiter = trio.CapacityLimiter(concurrency)
    async with OrpheusTTS(urls, hedge_ttfb_ms=hedge_ms) as tts:

        async def one(i: int) -> None:
            async with (
                limiter,
                tts.open_stream(
                    f"bench request {i}.", chunks=2, chunk_samples=480
                ) as audio,
            ):
                async for _ in audio:
                    pass
                ttfbs.append(audio.ttfb_s)

        async with trio.open_nursery() as nursery:
            for i in range(requests):
                nursery.start_soon(one, i)
        attempts = sum(s.attempts for s in tts.endpoints())
    ms = np.array(ttfbs) * 1000.0
    return {
        "hedging": "off" if hedge_ms is None else f"on ({hedge_ms:g} ms)",
        "requests": requests,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "p999_ms": float(np.percentile(ms, 99.9)),
        "extra_pct": 100.0 * (attempts - requests) / requests,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    slow_ms = args.ttfb_ms * 10
    results: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        urls = []
        for worker in range(4):
            engine = SyntheticEngine(
                defaults={"ttfb_ms": args.ttfb_ms},
                faults=[
                    ScheduledFault({"ttfb_ms": slow_ms}, fraction=0.05, seed=worker)
                ],
            )
            config = ServerConfig(
                host="127.0.0.1", port=0, max_concurrency=64, max_queue=256
            )
            urls.append(await nursery.start(serve, engine, config))
        for hedge_ms in (None, args.hedge_ms):
            results.append(
                await run_mode(urls, hedge_ms, args.requests, args.concurrency)
            )
        nursery.cancel_scope.cancel()
    off, on = results
    return {
        "workers": 4,
        "ttfb_ms": args.ttfb_ms,
        "slow_ttfb_ms": slow_ms,
        "slow_fraction": 0.05,
        "concurrency": args.concurrency,
        "modes": results,
        "p99_ratio_on_off": on["p99_ms"] / off["p99_ms"],
        "targets_met": on["p99_ms"] <= 0.4 * off["p99_ms"] and on["extra_pct"] <= 10.0,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"4 workers, first chunk {report['ttfb_ms']} ms, 5% of requests {report['slow_ttfb_ms']} ms, "
        f"concurrency {report['concurrency']}"
    )
    print(
        f"{'hedging':<14}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'extra %':>9}"
    )
    for m in report["modes"]:
        print(
            f"{m['hedging']:<14}{m['requests']:>9}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}"
            f"{m['p999_ms']:>10.1f}{m['extra_pct']:>9.1f}"
        )
    verdict = "met" if report["targets_met"] else "NOT met"
    print(
        f"p99 on/off = {report['p99_ratio_on_off']:.2f} (target <= 0.40), extra <= 10%: targets {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests (< 30 s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--requests", type=int, help="requests per mode (default 2000, quick 600)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--ttfb-ms", type=float, default=100.0, help="normal time to first chunk"
    )
    parser.add_argument(
        "--hedge-ms", type=float, default=200.0, help="hedge_ttfb_ms when hedging is on"
    )
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 600 if args.quick else 2000
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")
    report = trio.run(main_async, args)
    print_table(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
