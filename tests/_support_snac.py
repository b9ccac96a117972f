"""Build, save and load the tiny random-init 24 kHz SNAC the local tests share.

The architecture is the real 24 kHz SNAC's (what Orpheus uses); only the
weights are random. It is built once per test session (``decoder_dim`` 1024
makes it slow-ish to build on CPU) and saved in both checkpoint formats.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from orpheus_trio.local.snac_decoder import SnacDecoder
    from orpheus_trio.local.stream_decode import DecodeWindow

SNAC_24KHZ_CONFIG: dict[str, object] = {
    "sampling_rate": 24000,
    "encoder_dim": 48,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 1024,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": 4096,
    "codebook_dim": 8,
    "vq_strides": [4, 2, 1],
}


def save_random_snac(directory: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Save a random-init SNAC twice: ``directory/bin`` (config.json +
    pytorch_model.bin) and ``directory/safetensors`` (config.json +
    model.safetensors). Returns both directories."""
    import snac
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = snac.SNAC(**SNAC_24KHZ_CONFIG)
    # snac's own weight init leaves the biases at torch's default; fine for tests.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    bin_dir = directory / "bin"
    st_dir = directory / "safetensors"
    for target in (bin_dir, st_dir):
        target.mkdir(parents=True, exist_ok=True)
        (target / "config.json").write_text(json.dumps(SNAC_24KHZ_CONFIG))
    torch.save(state, bin_dir / "pytorch_model.bin")
    save_file(state, str(st_dir / "model.safetensors"))
    return bin_dir, st_dir


@cache
def shared_snac_dirs() -> tuple[Path, Path]:
    """The session's saved random SNAC: ``(bin_dir, safetensors_dir)``, built once."""
    root = Path(tempfile.mkdtemp(prefix="orpheus-trio-snac-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return save_random_snac(root)


@cache
def shared_decoder() -> SnacDecoder:
    """The saved random SNAC loaded through ``SnacDecoder.from_pretrained``, noise off
    (deterministic). Shared: tests must not change its settings."""
    from orpheus_trio.local.snac_decoder import SnacDecoder

    return SnacDecoder.from_pretrained(shared_snac_dirs()[0], noise=False)


def random_frames(n: int, *, seed: int) -> npt.NDArray[np.int64]:
    """``n`` frames of uniformly random codes (0..4095), shape ``(n, 7)``."""
    return np.random.default_rng(seed).integers(0, 4096, size=(n, 7), dtype=np.int64)


def snr_db(reference: npt.NDArray[np.float32], test: npt.NDArray[np.float32]) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference``, in dB (inf when equal)."""
    assert reference.shape == test.shape, (reference.shape, test.shape)
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


class InstantDecoder:
    """A window decoder that takes no time (in the loop, no thread): audio that names the window.

    For tests of the token path's timing and reads, where the SNAC decode's own
    time would hide them; equal windows give equal audio, any difference shows.
    """

    def __init__(self, snac: SnacDecoder) -> None:
        self.decoder = snac

    async def decode_window(self, window: DecodeWindow) -> npt.NDArray[np.float32]:
        samples = (window.latent_stop - window.latent_start) * self.decoder.samples_per_latent
        level = (int(window.frames.sum()) % 1000 + window.first_frame) / 2000
        return window.keep(np.full(samples, level, dtype=np.float32))
