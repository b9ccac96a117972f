"""The CLI on a client-only install, and on one without the ``local`` extra.

``pip install .`` gives the base dependencies only. Each test here runs the
command in a fresh virtual environment holding exactly the distributions that
install would bring: the closure of pyproject.toml's ``dependencies`` (plus
the extras named), linked from this test's own environment (no network, no
build: well under a second), and the package from this checkout.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
import trio
from _support_cli import clean_env
from _support_server import StartServer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CHECKOUT = Path(__file__).resolve().parents[1]
SERVER_EXTRA_HINT = "pip install '.[server]'"


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return [Requirement(name) for name in names]


def closure(requirements: list[Requirement]) -> set[str]:
    """The distributions these requirements install (markers for this interpreter, no extras)."""
    seen: set[str] = set()
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate()]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(name)
        for spec in dist.requires or []:
            child = Requirement(spec)
            if child.marker is None or child.marker.evaluate({"extra": ""}):
                todo.append(child)
            else:
                for extra in requirement.extras:
                    if child.marker.evaluate({"extra": extra}):
                        todo.append(child)
                        break
    return seen


@functools.cache
def environment(tmp_root: Path, extras: tuple[str, ...]) -> Path:
    """A venv with this checkout and the closure of its base dependencies + ``extras``; its python."""
    where = tmp_root / ("venv-" + "-".join(("base", *extras)))
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    for name in sorted(closure(declared(extras))):
        dist = importlib.metadata.distribution(name)
        base = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            target = site / top
            if top == ".." or top.endswith(".pth") or target.exists():
                continue  # scripts, path hooks, what another distribution already placed
            target.symlink_to(base / top)
    (site / "orpheus_trio_checkout.pth").write_text(str(CHECKOUT / "src") + "\n")
    return python


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("installs")


async def cli(
    python: Path, *args: str | Path
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [python, "-m", "orpheus_trio", *map(str, args)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=clean_env(),
    )


def one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    err = done.stderr.decode()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


async def test_the_base_install_really_lacks_the_extras(venvs: Path) -> None:
    python = environment(venvs, ())
    done = await trio.run_process(
        [python, "-c", "import trio, httpx, numpy, orpheus_trio; import httptools"],
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 1
    assert b"No module named 'httptools'" in done.stderr


@pytest.mark.parametrize(
    "args",
    [["--help"], ["speak", "--help"], ["batch", "--help"], ["system", "--help"]],
)
async def test_help_works_on_a_client_only_install(venvs: Path, args: list[str]) -> None:
    done = await cli(environment(venvs, ()), *args)
    assert done.returncode == 0, done.stderr.decode()
    assert b"usage: orpheus-trio" in done.stdout


async def test_help_lists_the_server_commands_with_the_extra_they_need(
    venvs: Path,
) -> None:
    done = await cli(environment(venvs, ()), "--help")
    assert b"(needs the server extra)" in done.stdout
    assert done.stdout.count(b"needs the server extra") == 2  # serve and gateway


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["serve", "--port", "0", "--engine", "synthetic"],
        ["serve", "--help"],
        ["gateway", "--upstream", "http://127.0.0.1:9"],
    ],
)
async def test_server_commands_without_the_server_extra_say_what_to_install(
    venvs: Path, args: list[str]
) -> None:
    done = await cli(environment(venvs, ()), *args)
    assert done.returncode == 1
    err = one_line(done)
    assert f"orpheus-trio {args[0]}: needs the server extra" in err
    assert SERVER_EXTRA_HINT in err


async def test_speak_to_a_service_works_on_a_client_only_install(
    venvs: Path, start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    out = tmp_path / "hi.wav"
    done = await cli(environment(venvs, ()), "speak", "Hi.", "-o", out, "--url", server.base_url)
    assert done.returncode == 0, done.stderr.decode()
    assert out.stat().st_size > 44


async def test_the_embedded_server_without_the_server_extra_says_what_to_install(
    venvs: Path, tmp_path: Path
) -> None:
    done = await cli(environment(venvs, ()), "speak", "Hi.", "-o", tmp_path / "hi.wav")
    assert done.returncode == 1
    err = one_line(done)
    assert "--url" in err and SERVER_EXTRA_HINT in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extras", [(), ("server",)])
async def test_on_box_flags_without_the_local_extra_say_what_to_install(
    venvs: Path, tmp_path: Path, extras: tuple[str, ...]
) -> None:
    done = await cli(
        environment(venvs, extras),
        "speak", "Hi.", "-o", tmp_path / "hi.wav", "--model", tmp_path, "--snac", tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    err = one_line(done)
    assert "on-box synthesis needs" in err and "pip install '.[local,server]'" in err
    assert list(tmp_path.iterdir()) == []
