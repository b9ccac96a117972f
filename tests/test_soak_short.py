"""A short soak in CI: bench/soak.py's run for ~10 s, 40 streams, 2 worker processes.

Every request's outcome must match its injected fault, every byte received must be the
synthetic engine's, and open fds, trio tasks and memory must not grow.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOAK_PATH = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


def load_soak():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("orpheus_soak", SOAK_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["orpheus_soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
def test_short_soak_loses_nothing_and_leaks_nothing() -> None:
    soak = load_soak()
    cfg = soak.SoakConfig(
        streams=40,
        duration_s=10.0,
        workers=2,
        transient_rate=0.05,
        persistent_rate=0.15,
        hedge_ms=300.0,
        seed=11,
        # With 15% of requests failing on purpose, 5 failures in a row on an
        # endpoint come by chance (~0.15**5 a request), and both endpoints
        # open together in about 1% of runs: every request then gets a
        # correct CircuitOpenError this test would count as unexpected.
        # At 10 in a row chance is out of it (~6e-9); an open breaker means
        # something real went wrong.
        breaker_failures=10,
    )
    report = soak.soak(cfg)
    soak.print_report(report)
    assert report.unexpected == []
    assert report.outcomes.get("ok", 0) > 200
    for kind in ("cut", "error", "malformed"):
        assert report.outcomes.get(f"{kind}_as_expected", 0) > 0, kind
    # Transient faults were met and hidden (hedges and failovers happened).
    assert report.hedged_or_failed_over > 0
    assert report.bytes_verified > 10_000_000
    # Nothing leaks: back to the baseline once the client is closed, no growth meanwhile.
    # Fewer than at the start is no leak (the process may drop fds of its own meanwhile).
    assert report.fds_after_close <= report.fds_baseline
    assert report.tasks_after_close == report.tasks_baseline
    assert report.fds_max_second_half <= report.fds_max_first_half + cfg.streams
    assert report.rss_mb_end - report.rss_mb_first_half < 20
