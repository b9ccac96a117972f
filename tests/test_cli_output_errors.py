"""An output the user may not write: the message names the user's path, not a hidden temporary file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support_cli import orpheus_trio
from _support_server import StartServer


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot create files in (root ignores modes: use /sys there)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/sys/kernel")
    try:
        (folder / ".orpheus-trio-probe").open("wb").close()
    except PermissionError:
        yield folder
        return
    except OSError:
        pass
    pytest.skip("running as root, and no folder here refuses root's writes")


def assert_names(err: str, path: Path) -> None:
    assert "Permission denied" in err, err
    assert repr(str(path)) in err, err
    assert ".part" not in err and ".lock" not in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err


async def test_speak_to_an_unwritable_folder_names_the_output_path(
    start_server: StartServer, unwritable_dir: Path
) -> None:
    server = await start_server()
    out = unwritable_dir / "hello.wav"
    done = await orpheus_trio("speak", "Hello.", "-o", out, "--url", server.base_url)
    assert done.returncode == 1
    assert_names(done.stderr.decode(), out)


async def test_batch_into_an_unwritable_folder_names_the_folder(
    start_server: StartServer, unwritable_dir: Path, tmp_path: Path
) -> None:
    server = await start_server()
    items = tmp_path / "items.txt"
    items.write_text("Hello.\n")
    done = await orpheus_trio(
        "batch", items, "-d", unwritable_dir, "--url", server.base_url, "--no-progress"
    )
    assert done.returncode == 1
    assert_names(done.stderr.decode(), unwritable_dir)
