"""Soak: N concurrent streams for M minutes through one OrpheusTTS, with random faults.

Workers are reference servers (synthetic engine) in child processes, so the open
files and memory measured here are the client's alone. Two kinds of faults:

- **transient**, scheduled by each worker on a seeded fraction of its requests:
  a 503 before streaming, or a first chunk 1.5 s late. The client must hide
  them (failover, hedging); the only other allowed outcome is a 503 surfaced
  when the retry budget says no more extra attempts (load shedding, counted).
- **persistent**, chosen per request by this script (its parameters go to
  every attempt): a cut connection, an in-band error, or a malformed line after
  ``k >= 1`` chunks. The request must fail with exactly the matching exception
  type after delivering a prefix of its audio, never failing over.

Every byte received is compared with the synthetic engine's audio (a pure
function of text, voice and parameters). Reported: requests by outcome, bytes
verified, time to first audio p50/p99, and open fds, RSS and trio tasks sampled
over time; after the client closes, fds and tasks must be back to the baseline.

    .venv/bin/python bench/soak.py [--streams 500] [--minutes 5] [--workers 4]
    .venv/bin/python bench/soak.py --quick [--json PATH]      # < 30 s
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _support_faults import open_fds, task_count  # the probes the fault tests use

from orpheus_trio import (
    Breaker,
    HTTPStatusError,
    IncompleteStreamError,
    OrpheusTTS,
    Pool,
    ProtocolError,
    ServiceError,
)
from orpheus_trio.server import ServerConfig, serve
from orpheus_trio.server.engines.synthetic import (
    ScheduledFault,
    SyntheticEngine,
    expected_stream,
)

#: Persistent faults: (name, request parameter, exception type the user must see).
PERSISTENT = (
    ("cut", "cut_after", IncompleteStreamError),
    ("error", "error_after", ServiceError),
    ("malformed", "malformed_after", ProtocolError),
)
CHUNK_SAMPLES = 960  # 40 ms of audio per chunk
SLOW_TTFB_MS = 1500


@dataclass
class SoakConfig:
    streams: int = 500
    duration_s: float = 300.0
    workers: int = 4
    #: Share of requests each worker fails with 503, and (again) delays by 1.5 s.
    transient_rate: float = 0.03
    #: Share of requests given a persistent fault.
    persistent_rate: float = 0.05
    hedge_ms: float = 400.0
    #: Pacing of the synthetic audio (each chunk takes rtf x its duration).
    rtf: float = 0.05
    seed: int = 1
    sample_every_s: float = 0.5
    #: The client's breaker threshold (consecutive failures that open it).
    breaker_failures: int = 5


@dataclass
class Sample:
    t_s: float
    fds: int
    rss_mb: float
    tasks: int


@dataclass
class SoakReport:
    config: dict[str, Any]
    outcomes: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    unexpected: list[str] = field(default_factory=list)
    bytes_verified: int = 0
    audio_s_verified: float = 0.0
    ttfb_ms_p50: float | None = None
    ttfb_ms_p99: float | None = None
    hedged_or_failed_over: int = 0
    samples: list[Sample] = field(default_factory=list)
    fds_baseline: int = 0
    fds_after_close: int = 0
    tasks_baseline: int = 0
    tasks_after_close: int = 0
    fds_max_first_half: int = 0
    fds_max_second_half: int = 0
    rss_mb_first_half: float = 0.0
    rss_mb_end: float = 0.0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.requests += 1


async def one_request(
    tts: OrpheusTTS,
    rng: random.Random,
    cfg: SoakConfig,
    report: SoakReport,
    ttfbs: list[float],
) -> None:
    """One request with maybe a persistent fault; checks its outcome and every byte."""
    text = f"soak {rng.getrandbits(48):x}"
    voice = rng.choice(["tara", "leo", None])
    chunks = rng.randint(3, 12)
    params: dict[str, Any] = {
        "chunk_samples": CHUNK_SAMPLES,
        "chunks": chunks,
        "seed": rng.randint(0, 1000),
        "rtf": cfg.rtf,
    }
    fault = None
    if rng.random() < cfg.persistent_rate:
        fault = rng.choice(PERSISTENT)
        at = rng.randint(1, chunks - 1)
        params[fault[1]] = at
    expected = expected_stream(text, voice, params)
    got: list[bytes] = []
    error: Exception | None = None
    try:
        async with tts.open_stream(text, voice, timeout_s=30, **params) as audio:
            ttfbs.append(audio.ttfb_s)
            if audio.attempts > 1:
                report.hedged_or_failed_over += 1
            async for pcm in audio:
                got.append(pcm)
    except Exception as caught:  # noqa: BLE001 - classified below
        error = caught
    # Every chunk that arrived is the right one, in order (a prefix of the expected audio).
    prefix_ok = got == expected[: len(got)]
    if prefix_ok:
        report.bytes_verified += sum(map(len, got))
        report.audio_s_verified += sum(map(len, got)) / 2 / 24_000
    if fault is None:
        if error is None and prefix_ok and len(got) == len(expected):
            report.count("ok")
        elif (
            isinstance(error, HTTPStatusError) and error.status_code == 503 and not got
        ):
            report.count("shed_503")  # transient fault, retry budget exhausted
        else:
            report.count("unexpected")
            report.unexpected.append(
                f"no fault: {error!r}, {len(got)}/{len(expected)} chunks"
            )
        return
    name, key, error_type = fault
    # An error frame or a broken line ends a stream exactly after the chunks before it
    # (the decoder delivers every frame before a bad line, however the body was split).
    # A cut may lose what the kernel had not handed over: fewer chunks, maybe none (then
    # the failure came before any audio, and failing over was allowed and tried).
    exact = name in ("error", "malformed")
    count_ok = len(got) == params[key] if exact else len(got) <= params[key]
    if isinstance(error, error_type) and prefix_ok and count_ok:
        report.count(f"{name}_as_expected")
    elif isinstance(error, HTTPStatusError) and error.status_code == 503 and not got:
        report.count("shed_503")
    else:
        report.count("unexpected")
        report.unexpected.append(
            f"{name} after {params[key]}: {error!r}, {len(got)} chunks, prefix_ok={prefix_ok}"
        )


async def run_soak(urls: list[str], cfg: SoakConfig) -> SoakReport:
    report = SoakReport(config=asdict(cfg))
    # Sockets that earlier work in this process dropped unclosed would otherwise be collected
    # during the run and make the count after close fall below the baseline.
    gc.collect()
    report.fds_baseline, report.tasks_baseline = open_fds(), task_count()
    ttfbs: list[float] = []
    process = psutil.Process()
    started = trio.current_time()
    end_at = started + cfg.duration_s

    async def stream_loop(n: int) -> None:
        rng = random.Random(cfg.seed * 100_003 + n)
        while trio.current_time() < end_at:
            await one_request(tts, rng, cfg, report, ttfbs)

    async def sampler() -> None:
        while True:
            report.samples.append(
                Sample(
                    round(trio.current_time() - started, 2),
                    open_fds(),
                    round(process.memory_info().rss / 2**20, 1),
                    task_count(),
                )
            )
            await trio.sleep(cfg.sample_every_s)

    async with (
        OrpheusTTS(
            urls,
            hedge_ttfb_ms=cfg.hedge_ms,
            pool=Pool(max_connections_per_endpoint=cfg.streams),
            breaker=Breaker(failures=cfg.breaker_failures),
            rng=random.Random(cfg.seed),
        ) as tts,
        trio.open_nursery() as outer,
    ):
        outer.start_soon(sampler)
        async with trio.open_nursery() as nursery:
            for n in range(cfg.streams):
                nursery.start_soon(stream_loop, n)
        outer.cancel_scope.cancel()
    with trio.move_on_after(5):  # closes land at once; allow the sampler's last wakeups
        while open_fds() > report.fds_baseline or task_count() > report.tasks_baseline:
            await trio.sleep(0.05)
    report.fds_after_close, report.tasks_after_close = open_fds(), task_count()
    half = len(report.samples) // 2
    first, second = report.samples[:half] or report.samples, report.samples[half:]
    report.fds_max_first_half = max(s.fds for s in first)
    report.fds_max_second_half = max(s.fds for s in second)
    report.rss_mb_first_half = max(s.rss_mb for s in first)
    report.rss_mb_end = second[-1].rss_mb
    if ttfbs:
        ms = sorted(t * 1000 for t in ttfbs)
        report.ttfb_ms_p50 = round(statistics.median(ms), 2)
        report.ttfb_ms_p99 = round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2)
    return report


# -- workers in child processes ---------------------------------------------------------


async def worker_main(seed: int, transient_rate: float, capacity: int) -> None:
    faults = []
    if transient_rate > 0:
        faults = [
            ScheduledFault({"fail_status": 503}, fraction=transient_rate, seed=seed),
            ScheduledFault(
                {"ttfb_ms": SLOW_TTFB_MS}, fraction=transient_rate, seed=seed + 7
            ),
        ]
    engine = SyntheticEngine(faults=faults)
    config = ServerConfig(
        port=0, max_concurrency=capacity, max_queue=capacity, read_timeout_s=30.0
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, engine, config)
        print(url, flush=True)


def start_workers(cfg: SoakConfig) -> tuple[list[subprocess.Popen[str]], list[str]]:
    procs, urls = [], []
    for n in range(cfg.workers):
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(cfg.seed * 31 + n),
                str(cfg.transient_rate),
                str(cfg.streams * 2),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        procs.append(proc)
        urls.append(proc.stdout.readline().strip())
    return procs, urls


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def soak(cfg: SoakConfig) -> SoakReport:
    procs, urls = start_workers(cfg)
    try:
        return trio.run(run_soak, urls, cfg)
    finally:
        stop_workers(procs)


def print_report(report: SoakReport) -> None:
    cfg = report.config
    print(
        f"soak: {cfg['streams']} streams x {cfg['duration_s']:.0f} s, {cfg['workers']} workers, "
        f"transient {cfg['transient_rate']:.0%} (503) + {cfg['transient_rate']:.0%} (slow), "
        f"persistent {cfg['persistent_rate']:.0%}"
    )
    print(f"{'outcome':<24}{'requests':>10}")
    for outcome, n in sorted(report.outcomes.items()):
        print(f"{outcome:<24}{n:>10}")
    print(f"{'total':<24}{report.requests:>10}")
    print(
        f"bytes verified: {report.bytes_verified:,} ({report.audio_s_verified:,.0f} s of audio); "
        f"hedged or failed over: {report.hedged_or_failed_over}"
    )
    print(
        f"time to first audio: p50 {report.ttfb_ms_p50} ms, p99 {report.ttfb_ms_p99} ms"
    )
    print(
        f"open fds: baseline {report.fds_baseline}, max first half {report.fds_max_first_half}, "
        f"max second half {report.fds_max_second_half}, after close {report.fds_after_close}"
    )
    print(
        f"trio tasks: baseline {report.tasks_baseline}, after close {report.tasks_after_close}; "
        f"RSS: first half max {report.rss_mb_first_half} MB, end {report.rss_mb_end} MB"
    )
    step = max(1, len(report.samples) // 8)
    print(
        "over time (t s: fds, RSS MB, tasks): "
        + ", ".join(
            f"{s.t_s:g}: {s.fds}, {s.rss_mb:g}, {s.tasks}"
            for s in report.samples[::step]
        )
    )
    for line in report.unexpected[:10]:
        print("UNEXPECTED:", line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        trio.run(worker_main, int(argv[1]), float(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--streams", type=int, default=500, help="concurrent streams (500)"
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="duration (5)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--transient-rate", type=float, default=0.03)
    parser.add_argument("--persistent-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="100 streams for 20 s")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    args = parser.parse_args(argv)
    cfg = SoakConfig(
        streams=args.streams,
        duration_s=args.minutes * 60,
        workers=args.workers,
        transient_rate=args.transient_rate,
        persistent_rate=args.persistent_rate,
        seed=args.seed,
    )
    if args.quick:
        cfg.streams, cfg.duration_s, cfg.workers = 100, 20.0, 3
    report = soak(cfg)
    print_report(report)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(asdict(report), out, indent=1)
    ok = not report.unexpected and report.fds_after_close <= report.fds_baseline
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
