"""``speak`` / ``batch`` with ``--model`` and ``--snac``: on-box synthesis from the command line.

The embedded server runs the orpheus engine instead of espeak. The model is
the tiny scripted Orpheus the local tests build (it answers every prompt with
the same frames), loaded by the subprocess through the users' loading code;
the audio must equal the whole-utterance decode of those frames.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
from _support_cli import orpheus_trio
from _support_llm import frame_codes, scripted_model_dir, snac_dir

from orpheus_trio.audio import read_wav
from orpheus_trio.cli.options import ConnectionSettings, OnBoxModel
from orpheus_trio.cli.session import open_session
from orpheus_trio.local.snac_decoder import SnacDecoder

FRAMES = 5


def expected_samples() -> np.ndarray:
    codes = np.array([frame_codes(f) for f in range(FRAMES)], dtype=np.int64)
    pcm = SnacDecoder.from_pretrained(snac_dir()).decode_pcm(codes)
    return np.frombuffer(pcm, dtype=np.int16).astype(np.int32)


def on_box_flags() -> list[str | Path]:
    return ["--model", scripted_model_dir(FRAMES), "--snac", snac_dir(), "--device", "cpu"]


async def test_speak_with_a_local_model_writes_its_speech(tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    done = await orpheus_trio("speak", "Hello there.", "-o", out, *on_box_flags())
    report = done.stderr.decode()
    assert done.returncode == 0, report
    assert "(embedded orpheus server)" in report
    # The report and nothing else: no "Loading weights" bar from transformers.
    assert all(line.startswith("orpheus-trio: ") for line in report.splitlines()), report
    got = np.frombuffer(read_wav(out).pcm, dtype=np.int16).astype(np.int32)
    expected = expected_samples()
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1
    assert np.any(expected != 0)


async def test_batch_with_a_local_model_writes_every_item(tmp_path: Path) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("First line.\nSecond line.\n")
    done = await orpheus_trio(
        "batch", source, "--out-dir", tmp_path / "out", "--no-progress", *on_box_flags()
    )
    assert done.returncode == 0, done.stderr.decode()
    expected = expected_samples()
    for name in ("0001.wav", "0002.wav"):
        got = np.frombuffer(read_wav(tmp_path / "out" / name).pcm, dtype=np.int16)
        assert np.abs(got.astype(np.int32) - expected).max() <= 1


async def test_on_box_flags_that_cannot_work_are_refused_before_loading(
    tmp_path: Path,
) -> None:
    out = tmp_path / "x.wav"
    model, snac = scripted_model_dir(FRAMES), snac_dir()
    for flags, message in [
        (["--model", model], "needs both --model and --snac"),
        (["--device", "cpu"], "--device: only with --model and --snac"),
        (["--model", model, "--snac", snac, "--url", "http://127.0.0.1:9"], "give one of them"),
    ]:
        done = await orpheus_trio("speak", "hi", "-o", out, *flags)
        assert done.returncode == 2 and message in done.stderr.decode(), flags
    # Found when loading: a clear line and exit 1, no traceback, no file.
    for flags, message in [
        (["--model", tmp_path / "missing", "--snac", snac], "does not exist"),
        (["--model", model, "--snac", snac, "--device", "gpu"], "unknown device 'gpu'"),
    ]:
        done = await orpheus_trio("speak", "hi", "-o", out, *flags)
        err = done.stderr.decode()
        assert done.returncode == 1 and "the model could not be loaded" in err, err
        assert message in err and "Traceback" not in err
    assert not out.exists()


async def test_the_on_box_server_gives_a_slow_cpu_model_time() -> None:
    # Espeak's 60 s default would cut a real Orpheus on a CPU short mid-paragraph.
    on_box = OnBoxModel(str(scripted_model_dir(FRAMES)), str(snac_dir()), device="cpu")
    settings = ConnectionSettings((), None, None, None, on_box)
    async with open_session(settings) as session:
        assert session.embedded and session.engine == "orpheus"
        async with httpx.AsyncClient() as http:
            info = (await http.get(session.base_urls[0] + "/v1/system")).json()
    assert info["engine"] == "orpheus"
    assert info["default_timeout_s"] == info["max_timeout_s"] == 600
