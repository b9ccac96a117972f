"""Text that is not UTF-8, into ``speak -``, ``speak TEXT``, ``batch -`` and ``batch FILE``.

Decoded strictly whatever the locale: a C locale makes Python read standard
input with ``surrogateescape``, which used to send lone surrogates to the
server (a cryptic 400). The command stops before any request, with one line
naming the input, the byte, its offset and the encoding expected.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from _support_cli import clean_env
from _support_server import StartServer

LATIN1 = "Café au lait.".encode("latin-1")  # 0xe9 at offset 3
LOCALES = ["C", "C.UTF-8"]


async def run_cli(
    args: list[str | bytes | Path], *, stdin: bytes = b"", locale: str
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "orpheus_trio", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=clean_env(LC_ALL=locale, LANG=locale),
    )


def assert_names_the_byte(
    done: subprocess.CompletedProcess[bytes], source: str, offset: int = 3, line: int = 1
) -> None:
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"{source} is not UTF-8" in err, err
    assert f"byte 0xe9 at offset {offset} (line {line})" in err, err


@pytest.mark.parametrize("locale", LOCALES)
async def test_speak_from_stdin_rejects_text_that_is_not_utf8(
    start_server: StartServer, tmp_path: Path, locale: str
) -> None:
    server = await start_server()
    out = tmp_path / "x.wav"
    done = await run_cli(
        ["speak", "-", "-o", out, "--url", server.base_url], stdin=LATIN1, locale=locale
    )
    assert_names_the_byte(done, "standard input")
    assert server.engine.requests_started == 0  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []


async def test_speak_rejects_a_text_argument_that_is_not_utf8(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    done = await run_cli(
        ["speak", LATIN1, "-o", tmp_path / "x.wav", "--url", server.base_url], locale="C"
    )
    assert_names_the_byte(done, "TEXT")
    assert server.engine.requests_started == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("locale", LOCALES)
async def test_batch_from_stdin_rejects_text_that_is_not_utf8(
    start_server: StartServer, tmp_path: Path, locale: str
) -> None:
    server = await start_server()
    done = await run_cli(
        ["batch", "-", "-d", tmp_path / "out", "--url", server.base_url],
        stdin=b"Fine line.\n" + LATIN1 + b"\n",
        locale=locale,
    )
    assert_names_the_byte(done, "standard input", offset=14, line=2)
    assert server.engine.requests_started == 0  # type: ignore[attr-defined]


async def test_batch_file_that_is_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_bytes(LATIN1 + b"\n")
    done = await run_cli(["batch", items, "-d", tmp_path / "out"], locale="C.UTF-8")
    assert_names_the_byte(done, str(items))


async def test_utf8_text_still_speaks_in_a_c_locale(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    out = tmp_path / "x.wav"
    done = await run_cli(
        ["speak", "-", "-o", out, "--url", server.base_url],
        stdin="Café au lait.".encode(),
        locale="C",
    )
    assert done.returncode == 0, done.stderr.decode()
    assert out.stat().st_size > 44
