"""Which decoder is active: Cython when built, pure Python when forced or unavailable.

Each check runs in a fresh interpreter, because the backend is chosen once, at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Decodes a small stream with the default decoder and prints what it learned.
PROBE = """
import orpheus_trio.protocol.frames as f
body = f.encode_chunk(0, b"\\x01\\x02") + f.encode_eos(1, 1)
d = f.FrameDecoder()
frames = d.feed(body[:7]) + d.feed(body[7:])
d.close()
assert frames == [f.Chunk(0, b"\\x01\\x02"), f.EndOfStream(1, 1)], frames
print(f.BACKEND, f.FrameDecoder.__name__, f.__file__)
"""

# Makes importing the extension fail the way a missing or broken build does.
BLOCK_EXTENSION = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "orpheus_trio.protocol._fastframe":
            raise ImportError("simulated: extension not built")
sys.meta_path.insert(0, Block())
"""


def probe(
    *, pure: bool = False, prelude: str = "", pythonpath: Path | None = None
) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORPHEUS_TRIO_PURE"}
    if pure:
        env["ORPHEUS_TRIO_PURE"] = "1"
    if pythonpath is not None:  # first, so it wins over the checkout
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(pythonpath), env.get("PYTHONPATH")])
        )
    result = subprocess.run(
        [sys.executable, "-c", prelude + PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=pythonpath or ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def extension_built() -> bool:
    try:
        import orpheus_trio.protocol._fastframe  # noqa: F401
    except ImportError:
        return False
    return True


def test_pure_env_var_forces_the_python_decoder() -> None:
    backend, name, _ = probe(pure=True)
    assert (backend, name) == ("python", "PythonFrameDecoder")


def test_python_decoder_takes_over_when_the_extension_cannot_import() -> None:
    backend, name, _ = probe(prelude=BLOCK_EXTENSION)
    assert (backend, name) == ("python", "PythonFrameDecoder")


@pytest.mark.skipif(
    not extension_built(),
    reason="orpheus_trio.protocol._fastframe is not built here (run: python setup.py build_ext --inplace)",
)
def test_dev_install_uses_the_cython_decoder() -> None:
    backend, name, _ = probe()
    assert (backend, name) == ("cython", "FastFrameDecoder")


@pytest.mark.slow
def test_built_wheel_works_with_and_without_its_extension(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
        ]
        + ["-w", str(tmp_path / "dist"), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("orpheus_trio-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "orpheus_trio/py.typed" in names
        archive.extractall(site)
    extensions = list((site / "orpheus_trio").glob("_fastframe*.so")) + list(
        (site / "orpheus_trio").glob("_fastframe*.pyd")
    )
    if not extensions:
        pytest.skip("this machine built the wheel without the extension (no compiler?)")

    backend, _, location = probe(pythonpath=site)
    assert backend == "cython"
    assert Path(location).is_relative_to(site)  # the wheel's copy, not the checkout
    assert probe(pythonpath=site, pure=True)[0] == "python"

    for extension in extensions:
        extension.unlink()
    assert probe(pythonpath=site)[0] == "python"


@pytest.mark.skipif(not extension_built(), reason="the Cython extension is not built")
def test_the_extension_takes_the_shared_rules_from_their_module_not_from_frames() -> None:
    """_fastframe imports protocol.rules, as frames does; nothing is bound back from frames."""
    from orpheus_trio.protocol import _fastframe, frames, rules

    assert not hasattr(_fastframe, "_bind")
    assert _fastframe._parse_line is rules.parse_line
    assert _fastframe._EndOfStream is rules.EndOfStream is frames.EndOfStream
    assert _fastframe.DEFAULT_MAX_LINE_BYTES == frames.DEFAULT_MAX_LINE_BYTES
