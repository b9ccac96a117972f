"""SNAC codes to 24 kHz audio, loaded once and kept lean for inference.

At load the weight-norm parametrizations are folded into plain weights (they
would otherwise be recomputed on every call), the encoder is dropped, and each
codebook's embedding and output projection are folded into one lookup table,
so turning codes into the decoder's latent is three gathers and two adds.

The noise blocks (SNAC adds learned, randomly scaled noise while upsampling)
are off by default, which makes decoding deterministic; ``noise=True``
restores the original behaviour.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn.utils import parametrize

from .devices import checked_device
from .hub import Piece, locate
from .tokens import TOKENS_PER_FRAME, deinterleave

__all__ = ["SnacDecoder", "UnsupportedSnacConfig", "float_to_pcm16"]

#: The only quantizer layout Orpheus' 7-token frames describe.
ORPHEUS_VQ_STRIDES = [4, 2, 1]


class UnsupportedSnacConfig(ValueError):
    """The SNAC checkpoint does not have the layout Orpheus frames need."""


def float_to_pcm16(audio: npt.NDArray[np.float32]) -> bytes:
    """Float audio to signed 16-bit little-endian PCM bytes (clipped to +-1, symmetric)."""
    scaled = np.rint(np.clip(audio, -1.0, 1.0) * 32767.0)
    pcm: bytes = scaled.astype("<i2").tobytes()
    return pcm


class _SwitchableNoise(nn.Module):
    """SNAC's NoiseBlock with an off switch (off: the identity)."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear
        self.enabled = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        noise = torch.randn((x.shape[0], 1, x.shape[2]), device=x.device, dtype=x.dtype)
        out: torch.Tensor = x + noise * self.linear(x)
        return out


class _Snake(nn.Module):
    """SNAC's Snake activation, ``x + sin(alpha*x)^2 / alpha``, with the
    reciprocal precomputed and fewer passes over the activations."""

    def __init__(self, alpha: torch.Tensor) -> None:
        super().__init__()
        self.alpha = nn.Parameter(alpha.detach().clone(), requires_grad=False)
        self.inverse_alpha = nn.Parameter((alpha.detach() + 1e-9).reciprocal(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, self.inverse_alpha, torch.sin(x * self.alpha).square_())


class SnacDecoder:
    """Decodes Orpheus code frames (``(n, 7)`` arrays, see :mod:`.tokens`) to audio.

    Thread-safe for concurrent calls on CPU; the batching service
    (:class:`~orpheus_trio.local.batching.BatchingDecoder`) calls it from one
    worker thread at a time.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        noise: bool = False,
        compile: bool | str = False,
    ) -> None:
        strides = [int(s) for s in getattr(model, "vq_strides", [])]
        if strides != ORPHEUS_VQ_STRIDES:
            raise UnsupportedSnacConfig(
                f"Orpheus frames need vq_strides {ORPHEUS_VQ_STRIDES}, this SNAC has {strides}"
            )
        if getattr(model, "attn_window_size", None) is not None:
            raise UnsupportedSnacConfig(
                "windowed streaming needs a convolution-only decoder (attn_window_size None)"
            )
        self.device = checked_device(device)
        self.dtype = dtype
        self.sample_rate = int(model.sampling_rate)
        self.samples_per_latent = math.prod(int(r) for r in model.decoder_rates)
        self.latents_per_frame = ORPHEUS_VQ_STRIDES[0]
        self.frame_samples = self.samples_per_latent * self.latents_per_frame

        decoder: nn.Module = model.decoder
        _fold_weight_norm(decoder)
        self._noise_blocks = _make_noise_switchable(decoder)
        _replace_snakes(decoder)
        #: Latent steps before / after its own that can change an output sample.
        self.context_latents = _receptive_field(decoder, self.samples_per_latent)
        with torch.inference_mode():
            self._tables = [_code_table(q) for q in model.quantizer.quantizers]
        decoder.eval().requires_grad_(False)
        self._decoder = decoder.to(device=self.device, dtype=dtype)
        self._tables = [t.to(device=self.device, dtype=dtype) for t in self._tables]
        self._run: Callable[[torch.Tensor], torch.Tensor] = self._decoder
        if compile:
            # Dynamic shapes: batches of 1..max_batch windows of many lengths
            # (ramp-up, steady, the end of each utterance) would otherwise
            # each compile anew (~20 s per shape on CPU) and, past dynamo's
            # recompile limit, run uncompiled. With them, a few graphs
            # (batch 1, batch > 1) serve every shape.
            # "reduce-overhead" (CUDA graphs) is opt-in: decode calls come from
            # worker threads, and CUDA graph trees are kept per thread.
            mode = "default" if compile is True else str(compile)
            self._run = torch.compile(self._decoder, mode=mode, dynamic=True)
        self.noise = noise

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        noise: bool = False,
        compile: bool | str = False,
        local_files_only: bool = False,
    ) -> SnacDecoder:
        """Load a SNAC checkpoint: a local directory with ``config.json`` and
        ``model.safetensors`` or ``pytorch_model.bin``, or a hub id (from the
        hub's cache, else downloaded; with the hub out of reach and nothing
        cached, a :class:`~.hub.CheckpointsMissing` at once that says how to
        download it). ``local_files_only``: never ask the hub.

        ``dtype`` may be a torch dtype or ``"float32"``, ``"float16"``, ``"bfloat16"``.
        ``compile``: ``True`` for ``torch.compile`` with dynamic shapes (meant
        for CUDA; a few graphs serve every window shape), or a
        ``torch.compile`` mode such as ``"reduce-overhead"`` (CUDA graphs).
        """
        import snac

        # Both checked before any file is read, so a typo fails fast.
        device, dtype = checked_device(device), _as_dtype(dtype)
        config_path, weights_path = _resolve_files(path_or_repo, local_files_only)
        with open(config_path, encoding="utf-8") as f:
            config: dict[str, Any] = json.load(f)
        if not isinstance(config, dict):
            raise UnsupportedSnacConfig(f"{config_path} is not a SNAC config (not a JSON object)")
        try:
            model = snac.SNAC(**config)
        except TypeError as exc:  # e.g. the LLM's directory given by mistake
            raise UnsupportedSnacConfig(
                f"{config_path} is not a SNAC config ({exc}); give the SNAC checkpoint's "
                "directory (e.g. hubertsiuzdak/snac_24khz), not the LLM's"
            ) from None
        if weights_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights_path))
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # missing, unexpected or mis-shaped weights
            first_line = str(exc).splitlines()[0]
            raise UnsupportedSnacConfig(
                f"{weights_path} does not match {config_path}: {first_line}"
            ) from exc
        return cls(model, device=device, dtype=dtype, noise=noise, compile=compile)

    @property
    def noise(self) -> bool:
        """Whether the noise blocks are on (random output) or off (deterministic)."""
        return self._noise

    @noise.setter
    def noise(self, enabled: bool) -> None:
        self._noise = enabled
        for block in self._noise_blocks:
            block.enabled = enabled

    def decode(self, frames: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Whole-utterance decode: ``(n, 7)`` frames to ``n * 2048`` float samples."""
        array = np.asarray(frames, dtype=np.int64)
        if array.ndim != 2 or array.shape[1] != TOKENS_PER_FRAME:
            raise ValueError(f"frames must have shape (n, {TOKENS_PER_FRAME}), got {array.shape}")
        if len(array) == 0:
            return np.zeros(0, dtype=np.float32)
        out: npt.NDArray[np.float32] = self.decode_batch(array[None])[0]
        return out

    def decode_pcm(self, frames: npt.ArrayLike) -> bytes:
        """Whole-utterance decode to s16le mono PCM bytes."""
        return float_to_pcm16(self.decode(frames))

    def decode_batch(
        self,
        frames: npt.NDArray[np.int64],
        latent_start: int = 0,
        latent_stop: int | None = None,
    ) -> npt.NDArray[np.float32]:
        """Decode ``(batch, n, 7)`` frames of equal length in one call.

        Only latent steps ``[latent_start, latent_stop)`` of the windows are
        run through the decoder (4 latent steps per frame); returns
        ``(batch, (latent_stop - latent_start) * samples_per_latent)`` floats.
        """
        if frames.ndim != 3 or frames.shape[2] != TOKENS_PER_FRAME or frames.shape[1] == 0:
            raise ValueError(f"frames must have shape (batch, n>0, {TOKENS_PER_FRAME}), got {frames.shape}")
        n_latents = frames.shape[1] * self.latents_per_frame
        stop = n_latents if latent_stop is None else latent_stop
        if not 0 <= latent_start < stop <= n_latents:
            raise ValueError(f"latent range [{latent_start}, {stop}) outside 0..{n_latents}")
        books = [np.stack(parts) for parts in zip(*(deinterleave(f) for f in frames), strict=True)]
        with torch.inference_mode():
            latent = self._latent(books)[:, :, latent_start:stop]
            audio = self._run(latent.contiguous())
            result = audio[:, 0, :].float().cpu().numpy()
        return result

    def _latent(self, books: list[npt.NDArray[np.int64]]) -> torch.Tensor:
        """Sum of the three codebooks' projected embeddings, ``(batch, dim, latents)``."""
        parts = []
        for table, codes, stride in zip(self._tables, books, ORPHEUS_VQ_STRIDES, strict=True):
            index = torch.from_numpy(codes).to(self.device, non_blocking=True)
            parts.append(table[index].repeat_interleave(stride, dim=1))  # (batch, latents, dim)
        return (parts[0] + parts[1] + parts[2]).transpose(1, 2)


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def _resolve_files(path_or_repo: str | os.PathLike[str], local_files_only: bool) -> tuple[Path, Path]:
    """``config.json`` and the weights file, from a directory or the hub."""
    root = Path(path_or_repo)
    if root.is_dir():
        config = root / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"no config.json in SNAC directory {root}")
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (root / name).is_file():
                return config, root / name
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in SNAC directory {root}")
    repo = str(path_or_repo)
    if root.exists() or root.is_absolute() or repo.startswith((".", "~")) or repo.count("/") != 1:
        raise FileNotFoundError(f"SNAC checkpoint {repo!r} is not a directory (nor a hub id owner/name)")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError as exc:
        raise FileNotFoundError(
            f"{repo!r} is not a local directory and huggingface_hub is not installed"
        ) from exc
    local_files_only = locate([Piece("SNAC decoder", repo)]) or local_files_only
    try:
        config_file = Path(hf_hub_download(repo_id=repo, filename="config.json", local_files_only=local_files_only))
        try:
            weights = Path(
                hf_hub_download(repo_id=repo, filename="model.safetensors", local_files_only=local_files_only)
            )
        except (EntryNotFoundError, LocalEntryNotFoundError):
            weights = Path(
                hf_hub_download(repo_id=repo, filename="pytorch_model.bin", local_files_only=local_files_only)
            )
    except Exception as exc:  # the hub has many error types; users get one clear one
        raise FileNotFoundError(f"could not get SNAC checkpoint {repo!r} from the hub: {exc}") from exc
    return config_file, weights


def _fold_weight_norm(module: nn.Module) -> None:
    for sub in list(module.modules()):
        if parametrize.is_parametrized(sub):
            names: Any = sub.parametrizations
            for name in list(names.keys()):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)


def _make_noise_switchable(decoder: nn.Module) -> list[_SwitchableNoise]:
    from snac.layers import NoiseBlock

    blocks: list[_SwitchableNoise] = []
    for sub in list(decoder.modules()):
        if isinstance(sub, nn.Sequential):
            for index, child in enumerate(sub):
                if isinstance(child, NoiseBlock):
                    block = _SwitchableNoise(child.linear)
                    sub[index] = block
                    blocks.append(block)
    return blocks


def _replace_snakes(decoder: nn.Module) -> None:
    from snac.layers import Snake1d

    for sub in list(decoder.modules()):
        if isinstance(sub, nn.Sequential):
            for index, child in enumerate(sub):
                if isinstance(child, Snake1d):
                    sub[index] = _Snake(child.alpha)


def _code_table(quantizer: Any) -> torch.Tensor:
    """``out_proj(codebook)``: the latent contribution of every code, ``(codes, dim)``."""
    codebook = quantizer.codebook.weight  # (codes, codebook_dim)
    projected: torch.Tensor = quantizer.out_proj(codebook.t()[None])  # (1, dim, codes)
    return projected[0].t().contiguous()


def _receptive_field(decoder: nn.Module, samples_per_latent: int) -> tuple[int, int]:
    """Latent steps before and after its own that can change an output sample.

    Exact, not estimated: the index interval that the output samples of one
    latent step depend on is walked back through every convolution (the
    other layers are pointwise, the residual adds keep positions).
    """
    convs = [m for m in decoder.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]
    lo, hi = 0, samples_per_latent - 1
    for conv in reversed(convs):
        kernel = int(conv.kernel_size[0])
        dilation = int(conv.dilation[0])
        padding = int(conv.padding[0])
        stride = int(conv.stride[0])
        if isinstance(conv, nn.ConvTranspose1d):
            # output j = i*stride - padding + t*dilation for tap t of input i
            lo = -((-(lo + padding - (kernel - 1) * dilation)) // stride)
            hi = (hi + padding) // stride
        else:
            if stride != 1:
                raise UnsupportedSnacConfig("strided convolution in the decoder")
            lo, hi = lo - padding, hi - padding + (kernel - 1) * dilation
    return -lo, hi
