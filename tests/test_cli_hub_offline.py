"""Hub ids without the network: one message at once, naming every missing piece.

The tests cannot reach the hub: ``HF_HUB_OFFLINE=1`` or an ``HF_ENDPOINT`` on
a closed local port, and an empty ``HF_HOME``. The hub client would spend
26 s retrying and then name only the SNAC checkpoint; the command must end
in seconds (before torch is even imported) with one line naming the model
and SNAC and the ``hf download`` command for each.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from _support_cli import clean_env, orpheus_trio

MODEL = "canopylabs/orpheus-3b-0.1-ft"
SNAC = "hubertsiuzdak/snac_24khz"

#: Far below the hub client's 26 s of retries, far above the command's own start.
WITHIN_S = 12.0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def no_hub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = clean_env(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", **extra)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):  # fmt: skip
        if name not in extra:
            env.pop(name, None)
    return env


def one_line(stderr: bytes) -> str:
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, stderr.decode()
    return lines[0]


@pytest.mark.parametrize(
    ("offline", "reason"),
    [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"), ({}, "cannot be reached: Connection refused")],
    ids=["offline-mode", "hub-unreachable"],
)
async def test_hub_ids_without_network_fail_at_once_naming_model_and_snac(
    tmp_path: Path, offline: dict[str, str], reason: str
) -> None:
    started = time.monotonic()
    done = await orpheus_trio(
        "speak", "Hello.", "-o", tmp_path / "out.wav", "--model", MODEL, "--snac", SNAC,
        env=no_hub_env(tmp_path, **offline),
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert reason in line
    for repo, folder in ((MODEL, "orpheus-3b-0.1-ft"), (SNAC, "snac_24khz")):
        assert f"'{repo}'" in line
        assert f"hf download {repo} --local-dir models/{folder}" in line
    assert "Retrying" not in done.stderr.decode()
    assert took < WITHIN_S, f"took {took:.1f} s"
    assert not (tmp_path / "out.wav").exists()


async def test_two_missing_directories_are_named_together(tmp_path: Path) -> None:
    done = await orpheus_trio(
        "speak", "Hello.", "-o", tmp_path / "out.wav",
        "--model", tmp_path / "no-model", "--snac", tmp_path / "no-snac",
        env=no_hub_env(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert f"the Orpheus model directory '{tmp_path / 'no-model'}' does not exist" in line
    assert f"the SNAC decoder directory '{tmp_path / 'no-snac'}' does not exist" in line


def cache_as_the_hub_would(cache: Path, repo: str, files: Path) -> None:
    """``files`` laid out in a hub cache as a download of ``repo`` leaves them."""
    commit = "0" * 40
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(files, root / "snapshots" / commit)


def test_a_cached_hub_id_loads_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _support_snac import random_frames, shared_snac_dirs
    from huggingface_hub import constants

    from orpheus_trio.local.hub import Piece, locate
    from orpheus_trio.local.snac_decoder import SnacDecoder

    cache = tmp_path / "hub"
    cache_as_the_hub_would(cache, "someone/tiny-snac", shared_snac_dirs()[1])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")

    # Cached, hub out of reach: load from the cache only (no request, no retries).
    assert locate([Piece("SNAC decoder", "someone/tiny-snac")]) is True
    started = time.monotonic()
    decoder = SnacDecoder.from_pretrained("someone/tiny-snac")
    assert time.monotonic() - started < WITHIN_S
    frames = random_frames(4, seed=1)
    reference = SnacDecoder.from_pretrained(shared_snac_dirs()[1])
    np.testing.assert_array_equal(decoder.decode(frames), reference.decode(frames))
    # Not cached: named, with the command.
    with pytest.raises(FileNotFoundError, match="hf download someone/other-snac --local-dir models/other-snac"):
        locate([Piece("SNAC decoder", "someone/other-snac")])
