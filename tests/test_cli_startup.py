"""The command line loads only what its sub-command needs; the package loads its names on use.

``import orpheus_trio`` and ``speak --help`` import none of httpx, Trio,
numpy or the server, so help and bad flags answer at once (and a Ctrl-C at
start has nothing to interrupt); every public name still resolves.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import pytest
from _support_cli import clean_env

import orpheus_trio

HEAVY = ("httpx", "trio", "anyio", "numpy", "orpheus_trio.client", "orpheus_trio.server", "httptools")


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules loaded once ``code`` ran, in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, check=True, env=clean_env(), timeout=60
    )
    return done.stdout.decode().split()


def test_importing_the_package_loads_no_dependency() -> None:
    assert loaded_after("import orpheus_trio") == []


@pytest.mark.parametrize("command", ["speak", "batch", "system"])
def test_a_client_commands_help_loads_no_dependency(command: str) -> None:
    code = (
        "from orpheus_trio.cli.dispatch import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main([{command!r}, '--help'])"
    )
    assert loaded_after(code) == []


def test_every_public_name_resolves_to_its_modules_object() -> None:
    from orpheus_trio import client, errors, options
    from orpheus_trio.audio import pcm

    homes = {"client": client, "errors": errors, "options": options, "pcm": pcm}
    for name in orpheus_trio.__all__:
        value = getattr(orpheus_trio, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        assert any(getattr(home, name, None) is value for home in homes.values()), name
    assert set(orpheus_trio.__all__) <= set(dir(orpheus_trio))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        orpheus_trio.Nope  # noqa: B018
    # Submodules still come as attributes, as when the package imported them up front.
    assert "numpy" in loaded_after("import orpheus_trio\norpheus_trio.audio.wav_header")


def test_speak_formats_match_the_encoders() -> None:
    from orpheus_trio.audio.formats import FORMATS
    from orpheus_trio.cli.parsers import SPEAK_FORMATS

    assert SPEAK_FORMATS == FORMATS


def speak(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "orpheus_trio", "speak", "Hello there.", *map(str, args)],
        capture_output=True, cwd=cwd, env=clean_env(), timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["hello.m4a", "hello.ogg.part", "hello.mp4"])
def test_an_unknown_suffix_is_refused_naming_the_formats(tmp_path: Path, name: str) -> None:
    done = speak("-o", name, cwd=tmp_path)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert f"cannot tell the format of {name}" in err
    assert ".wav, " in err and "--format" in err
    assert list(tmp_path.iterdir()) == []


def test_raw_is_pcm_and_format_overrides_the_suffix(tmp_path: Path) -> None:
    raw = speak("-o", "hello.raw", "-q", cwd=tmp_path)
    assert raw.returncode == 0, raw.stderr.decode()
    pcm = (tmp_path / "hello.raw").read_bytes()
    assert pcm[:4] != b"RIFF" and len(pcm) % 2 == 0 and len(pcm) > 0
    forced = speak("-o", "hello.m4a", "--format", "wav", "-q", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr.decode()
    with wave.open(str(tmp_path / "hello.m4a"), "rb") as clip:  # the WAV asked for, true sizes
        assert clip.getnframes() * 2 == len(pcm)


def test_a_wav_to_a_pipe_says_its_length_is_unknown_and_a_file_gets_true_sizes(tmp_path: Path) -> None:
    piped = subprocess.run(
        f"{sys.executable} -m orpheus_trio speak 'Hello there.' -o - --format wav | cat > piped.wav",
        shell=True, capture_output=True, cwd=tmp_path, env=clean_env(), timeout=120, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr.decode()
    assert "header says 'unknown length'" in piped.stderr.decode()
    assert (tmp_path / "piped.wav").read_bytes()[4:8] == b"\xff\xff\xff\xff"
    filed = speak("-o", "filed.wav", cwd=tmp_path)
    assert "unknown length" not in filed.stderr.decode()
    with wave.open(str(tmp_path / "filed.wav"), "rb") as clip:
        assert clip.getnframes() * 2 == (tmp_path / "filed.wav").stat().st_size - 44


def test_a_client_command_does_not_load_httpxs_own_command_line(tmp_path: Path) -> None:
    """httpx imports click, rich and pygments for its CLI when installed; ours never runs it."""
    (tmp_path / "items.txt").write_text("One line.\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orpheus_trio", "batch", "items.txt",
         "--no-progress", "--url", "http://127.0.0.1:9"],
        capture_output=True, cwd=tmp_path, env=clean_env(), timeout=120, check=False,
    )  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines() if "|" in line}
    assert "httpx" in imported and "orpheus_trio.client" in imported  # it did run
    assert not imported & {"rich", "click", "pygments"}
