"""What scripts/demo.sh, setup.sh and test.sh install and run, with a recording stand-in for python.

The stand-in logs each command line (and ORPHEUS_TRIO_REQUIRE_TOOLS) instead of
running it, and makes the venv the scripts expect, so the scripts' own logic
runs in a second with nothing installed. The real demo is timed by hand on a
fresh clone; the figure is in the README.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]

STAND_IN = """#!/usr/bin/env bash
echo "$(basename "$0") $* | REQUIRE_TOOLS=${ORPHEUS_TRIO_REQUIRE_TOOLS-unset}" >> "$RECORD"
if [ "${1-} ${2-}" = "-m venv" ]; then
    mkdir -p "$3/bin"
    cp "$0" "$3/bin/python"
    cp "$0" "$3/bin/orpheus-trio"
    cp "$0" "$3/bin/lint-imports"
fi
"""


def run_script(tmp_path: Path, script: str, *args: str, **env: str) -> list[str]:
    """Run a copy of scripts/SCRIPT in an empty tree; the command lines it ran."""
    tree = tmp_path / "tree"
    shutil.copytree(CHECKOUT / "scripts", tree / "scripts")
    python = tmp_path / "python3"
    python.write_text(STAND_IN)
    python.chmod(0o755)
    record = tmp_path / "record"
    record.touch()
    environment = {k: v for k, v in os.environ.items() if k not in ("TORCH", "ORPHEUS_TRIO_REQUIRE_TOOLS")}
    environment.update(PYTHON=str(python), RECORD=str(record), **env)
    subprocess.run(["bash", str(tree / "scripts" / script), *args], env=environment, check=True)
    return record.read_text().splitlines()


def installs(lines: list[str]) -> list[str]:
    return [line.split(" install ", 1)[1].split(" | ")[0] for line in lines if " pip install " in line]


def test_the_demo_installs_the_server_extra_only_and_no_torch(tmp_path: Path) -> None:
    lines = run_script(tmp_path, "demo.sh")
    packages = installs(lines)
    assert any(spec.endswith('-e .[server]') for spec in packages), packages
    assert not any("torch" in spec or "local" in spec or "test" in spec for spec in packages), packages
    assert lines[-1].startswith('orpheus-trio speak Hello from Orpheus. -o hello.wav'), lines


def test_the_development_setup_pins_the_cpu_torch_before_every_extra(tmp_path: Path) -> None:
    packages = installs(run_script(tmp_path, "setup.sh"))
    torch = next(i for i, spec in enumerate(packages) if "torch" in spec)
    extras = next(i for i, spec in enumerate(packages) if "-e .[" in spec)
    assert packages[torch].endswith("torch==2.13.0+cpu"), packages
    assert packages[extras].endswith("-e .[server,formats,local,test,bench]"), packages
    assert torch < extras


def test_torch_can_be_chosen_for_a_cuda_build(tmp_path: Path) -> None:
    packages = installs(run_script(tmp_path, "setup.sh", TORCH="torch==2.13.0"))
    assert any(spec.endswith("torch==2.13.0") for spec in packages), packages


@pytest.mark.parametrize("script", ["test.sh"])
def test_the_test_script_requires_the_tools_tests_need(tmp_path: Path, script: str) -> None:
    lines = run_script(tmp_path, script)
    pytest_runs = [line for line in lines if "-m pytest" in line]
    assert pytest_runs and all(line.endswith("REQUIRE_TOOLS=1") for line in pytest_runs), lines
