"""External programs some tests need (a browser, an inference engine's server).

Such a test skips when the program is missing on a developer's machine, but
``scripts/test.sh`` (what CI runs) installs them and sets
``ORPHEUS_TRIO_REQUIRE_TOOLS=1``: there a missing program fails the test, so a
broken install step can never turn into a silent skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRE_ENV = "ORPHEUS_TRIO_REQUIRE_TOOLS"


def tools_required() -> bool:
    """Whether a missing program is a failure here (CI) rather than a skip."""
    return os.environ.get(REQUIRE_ENV) == "1"


def missing_tool(what: str, how_to_get_it: str) -> None:
    """Skip (or, where tools are required, fail) because ``what`` is not installed."""
    message = f"{what} is not installed: {how_to_get_it}"
    if tools_required():
        pytest.fail(f"{message} ({REQUIRE_ENV}=1 makes this a failure)")
    pytest.skip(message)


def require_program(names: list[str], how_to_get_it: str) -> Path:
    """The first of ``names`` found on PATH (or given as a path), else skip/fail."""
    for name in names:
        found = shutil.which(name)
        if found:
            return Path(found)
    missing_tool(" or ".join(names), how_to_get_it)
    raise AssertionError("unreachable")  # missing_tool always raises
