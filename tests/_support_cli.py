"""Running the ``orpheus-trio`` command in a subprocess from Trio tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without the variables the CLI reads, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("ORPHEUS_URLS", "ORPHEUS_KEY")
    }
    env.update(extra)
    return env


async def orpheus_trio(
    *args: str | Path, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m orpheus_trio ARGS`` without blocking Trio (a test server may run in-process)."""
    return await trio.run_process(
        [sys.executable, "-m", "orpheus_trio", *map(str, args)],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env if env is not None else clean_env(),
    )
