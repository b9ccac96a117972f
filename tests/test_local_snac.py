"""SnacDecoder: loading, folding, exactness against snac's own decode, noise switch, dtype.

Every test uses a random-init 24 kHz SNAC built and saved by the test session
(tests/_support_snac.py). Decoding is deterministic because the noise blocks
are switched off, except where a test switches them on and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _support_snac import (
    SNAC_24KHZ_CONFIG,
    random_frames,
    shared_decoder,
    shared_snac_dirs,
    snr_db,
)

from orpheus_trio.local.snac_decoder import (
    SnacDecoder,
    UnsupportedSnacConfig,
    float_to_pcm16,
)
from orpheus_trio.local.tokens import deinterleave

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def snac_reference_decode(model_dir: Path, frames: np.ndarray) -> np.ndarray:
    """snac's own loader and decode, noise blocks replaced by the identity."""
    import snac
    from snac.layers import NoiseBlock

    model = snac.SNAC.from_pretrained(str(model_dir)).eval()
    for module in model.modules():
        if isinstance(module, NoiseBlock):
            module.forward = lambda x: x  # type: ignore[method-assign]
    with torch.inference_mode():
        codes = [torch.from_numpy(c)[None] for c in deinterleave(frames)]
        out: np.ndarray = model.decode(codes)[0, 0].numpy()
    return out


def test_decode_matches_snac_own_decode() -> None:
    frames = random_frames(5, seed=1)
    ours = shared_decoder().decode(frames)
    theirs = snac_reference_decode(shared_snac_dirs()[0], frames)
    assert ours.shape == (5 * 2048,) and ours.dtype == np.float32
    assert snr_db(theirs, ours) > 100
    assert np.abs(ours).max() > 1e-3  # real signal, not silence


def test_safetensors_and_bin_checkpoints_load_the_same_model() -> None:
    frames = random_frames(2, seed=2)
    from_st = SnacDecoder.from_pretrained(shared_snac_dirs()[1]).decode(frames)
    np.testing.assert_array_equal(from_st, shared_decoder().decode(frames))


def test_weight_norm_is_folded_at_load() -> None:
    decoder = shared_decoder()._decoder
    names = [name for name, _ in decoder.named_parameters()]
    assert not any("parametrizations" in name for name in names)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in decoder.modules())


def test_context_is_exactly_the_measured_receptive_field() -> None:
    decoder = shared_decoder()
    assert decoder.context_latents == (10, 10)
    frames = random_frames(12, seed=3)
    base = decoder.decode(frames)
    changed = frames.copy()
    changed[6, 2] = (changed[6, 2] + 1000) % 4096  # codebook 2, latent step 24
    diff = np.nonzero(decoder.decode(changed) != base)[0]
    left, right = decoder.context_latents
    spl = decoder.samples_per_latent
    assert diff.min() // spl == 24 - left
    assert diff.max() // spl == 24 + right


def test_decode_pcm_is_s16le_of_the_float_audio() -> None:
    frames = random_frames(1, seed=4)
    audio = shared_decoder().decode(frames)
    pcm = shared_decoder().decode_pcm(frames)
    assert len(pcm) == 2 * 2048
    samples = np.frombuffer(pcm, dtype="<i2")
    np.testing.assert_array_equal(samples, np.rint(audio * 32767).astype(np.int16))
    assert float_to_pcm16(np.array([1.5, -1.5, 0.0], dtype=np.float32)) == np.array(
        [32767, -32767, 0], dtype="<i2"
    ).tobytes()


def test_empty_and_malformed_input() -> None:
    decoder = shared_decoder()
    assert decoder.decode(np.zeros((0, 7), dtype=np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        decoder.decode([[1, 2, 3]])
    with pytest.raises(ValueError, match="0..4095"):
        decoder.decode([[0, 0, 0, 0, 0, 0, 4096]])
    with pytest.raises(ValueError, match="latent range"):
        decoder.decode_batch(random_frames(2, seed=0)[None], 0, 9)


def test_noise_blocks_switch_on_and_off() -> None:
    # Its own instance: this test changes the noise setting.
    decoder = SnacDecoder.from_pretrained(shared_snac_dirs()[0], noise=True)
    frames = random_frames(2, seed=5)
    torch.manual_seed(7)
    first = decoder.decode(frames)
    torch.manual_seed(7)
    again = decoder.decode(frames)
    different = decoder.decode(frames)
    np.testing.assert_array_equal(first, again)  # seeded noise is reproducible
    assert not np.array_equal(first, different)
    decoder.noise = False
    np.testing.assert_array_equal(decoder.decode(frames), shared_decoder().decode(frames))


def test_bfloat16_option_runs_the_same_path_on_cpu() -> None:
    decoder = SnacDecoder.from_pretrained(shared_snac_dirs()[0], dtype="bfloat16")
    frames = random_frames(2, seed=6)
    audio = decoder.decode(frames)
    assert audio.dtype == np.float32
    assert snr_db(shared_decoder().decode(frames), audio) > 10  # bf16 has an 8-bit mantissa


def test_loading_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SnacDecoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(SNAC_24KHZ_CONFIG))
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        SnacDecoder.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        SnacDecoder.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="dtype"):
        SnacDecoder.from_pretrained(shared_snac_dirs()[0], dtype="float8")


def test_a_checkpoint_that_is_not_this_snac_is_named(tmp_path: Path) -> None:
    import shutil

    llm_like = tmp_path / "llm"  # an LLM's config.json given as the SNAC path
    llm_like.mkdir()
    (llm_like / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (llm_like / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnsupportedSnacConfig, match="is not a SNAC config .* not the LLM's"):
        SnacDecoder.from_pretrained(llm_like)
    (llm_like / "config.json").write_text("[1, 2]")
    with pytest.raises(UnsupportedSnacConfig, match="not a JSON object"):
        SnacDecoder.from_pretrained(llm_like)
    # Weights of another SNAC size under this config.
    other = tmp_path / "other"
    shutil.copytree(shared_snac_dirs()[0], other)
    (other / "config.json").write_text(json.dumps(dict(SNAC_24KHZ_CONFIG, decoder_dim=512)))
    with pytest.raises(UnsupportedSnacConfig, match="does not match"):
        SnacDecoder.from_pretrained(other)


def test_unreachable_hub_id_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    # Offline mode with an empty cache: resolved without touching the network.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not on this machine and the hub cannot be asked") as info:
        SnacDecoder.from_pretrained("nobody/no-such-snac")
    assert "hf download nobody/no-such-snac --local-dir models/no-such-snac" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_it_says_what_to_do(tmp_path: Path) -> None:
    # Not torch's "AssertionError: Torch not compiled with CUDA enabled", and
    # before any file is read (the directory here does not even exist).
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="sees no CUDA device: use device='cpu'"):
            SnacDecoder.from_pretrained(tmp_path / "missing", device=device)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        SnacDecoder.from_pretrained(tmp_path / "missing", device="gpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        SnacDecoder.from_pretrained(tmp_path / "missing", dtype="float8")


def test_a_cuda_index_past_the_devices_present_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from orpheus_trio.local.devices import checked_device

    # Pretend two GPUs, so the index rule runs on any machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert checked_device("cuda:1") == torch.device("cuda", 1)
    assert checked_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"there are 2 CUDA devices \(0\.\.1\)"):
        checked_device("cuda:2")


def test_checkpoints_orpheus_cannot_use_are_rejected() -> None:
    import snac

    tiny = dict(SNAC_24KHZ_CONFIG, encoder_dim=4, decoder_dim=16, latent_dim=8)
    with pytest.raises(UnsupportedSnacConfig, match="vq_strides"):
        SnacDecoder(snac.SNAC(**dict(tiny, vq_strides=[8, 4, 2, 1])))
    with pytest.raises(UnsupportedSnacConfig, match="attn_window_size"):
        SnacDecoder(snac.SNAC(**dict(tiny, attn_window_size=4)))


@pytest.mark.slow
def test_compiled_decode_matches_eager_on_cpu() -> None:
    # The CUDA compile path, exercised on CPU (about 20 s per compile). Windows
    # come in many shapes: the graphs are dynamic, so a new batch size or
    # length reuses them instead of compiling again (another ~20 s each).
    decoder = SnacDecoder.from_pretrained(shared_snac_dirs()[0], compile=True)
    frames = random_frames(1, seed=10)
    assert snr_db(shared_decoder().decode(frames), decoder.decode(frames)) > 100
    from torch._dynamo.utils import counters

    decoder.decode_batch(np.stack([random_frames(2, seed=s) for s in range(2)]))
    graphs = counters["stats"]["unique_graphs"]
    for batch, length in [(3, 3), (5, 2)]:  # shapes not seen before
        windows = np.stack([random_frames(length, seed=s) for s in range(batch)])
        audio = decoder.decode_batch(windows)
        assert snr_db(shared_decoder().decode_batch(windows).ravel(), audio.ravel()) > 100
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled again


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_decode_matches_cpu(dtype: str) -> None:
    decoder = SnacDecoder.from_pretrained(shared_snac_dirs()[0], device="cuda", dtype=dtype)
    frames = random_frames(4, seed=8)
    audio = decoder.decode(frames)
    assert snr_db(shared_decoder().decode(frames), audio) > (60 if dtype == "float32" else 10)


@needs_cuda
@pytest.mark.cuda
def test_cuda_compiled_decode_matches_cpu() -> None:
    frames = random_frames(4, seed=9)
    expected = shared_decoder().decode(frames)
    for mode in (True, "reduce-overhead"):
        decoder = SnacDecoder.from_pretrained(shared_snac_dirs()[0], device="cuda", compile=mode)
        for _ in range(3):  # warm-up runs, then (CUDA-graph) replays
            audio = decoder.decode(frames)
        assert snr_db(expected, audio) > 60
