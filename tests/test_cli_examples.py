"""The examples run as users run them (``python examples/X.py``): on the embedded default
server, and on the services named by ``ORPHEUS_URLS`` / ``ORPHEUS_KEY``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import trio
from _support_cli import clean_env
from _support_server import StartServer

from orpheus_trio.audio import read_wav
from orpheus_trio.server.engines.synthetic import expected_stream

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def run_example(name: str, *args: str, cwd: Path, **env: str) -> str:
    done = await trio.run_process(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=clean_env(**env),
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def test_save_to_wav_example(tmp_path: Path) -> None:
    out = await run_example(
        "save_to_wav.py", "Saved by the example.", "x.wav", cwd=tmp_path
    )
    clip = read_wav(tmp_path / "x.wav")
    assert (
        clip.format.sample_rate == 24_000
        and clip.duration_s > 0.8
        and clip.rms() > 0.02
    )
    assert "x.wav:" in out and "24000 Hz" in out


async def test_concurrent_example_writes_each_line_and_the_joined_file(
    tmp_path: Path,
) -> None:
    out = await run_example("concurrent_synthesis.py", "out", cwd=tmp_path)
    clips = [read_wav(tmp_path / "out" / f"{i:02d}.wav") for i in range(6)]
    assert all(clip.duration_s > 0.4 and clip.rms() > 0.02 for clip in clips)
    joined = read_wav(tmp_path / "out" / "all.wav")
    assert joined.duration_s == pytest.approx(
        sum(c.duration_s for c in clips) + 5 * 0.3, abs=1e-3
    )
    assert joined.pcm.startswith(clips[0].pcm) and joined.pcm.endswith(clips[-1].pcm)
    assert "everything, in order" in out


async def test_long_text_example(tmp_path: Path) -> None:
    out = await run_example("long_text.py", cwd=tmp_path)
    clip = read_wav(tmp_path / "long.wav")
    assert clip.duration_s > 20 and clip.rms() > 0.02
    assert "4 pieces" in out and "first audio after" in out


async def test_examples_use_orpheus_urls_and_orpheus_key(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(api_keys=("example-key",))
    text = "Sent to the service in ORPHEUS_URLS."
    await run_example(
        "save_to_wav.py", text, "x.wav", cwd=tmp_path,
        ORPHEUS_URLS=f" {server.base_url} ,", ORPHEUS_KEY="example-key",
    )  # fmt: skip
    # The synthetic engine's audio, byte for byte: this server answered, with the key.
    assert read_wav(tmp_path / "x.wav").pcm == b"".join(
        expected_stream(text, "tara", {})
    )
    # An empty ORPHEUS_KEY is no key (as for the command), not a refused empty key.
    open_server = await start_server()
    await run_example(
        "save_to_wav.py", text, "y.wav", cwd=tmp_path,
        ORPHEUS_URLS=open_server.base_url, ORPHEUS_KEY="",
    )  # fmt: skip
    assert read_wav(tmp_path / "y.wav").pcm == read_wav(tmp_path / "x.wav").pcm


ROOT = EXAMPLES.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_relative_links_in_the_docs_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        if not (doc.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert broken == [], f"{doc.name} links to missing files: {broken}"
