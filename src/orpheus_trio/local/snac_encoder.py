"""Reference audio to Orpheus code frames: the SNAC encoder beside the decoder.

Voice cloning puts the SNAC codes of a reference clip into the prompt (see
:func:`~.llm.cloning_prompt_ids`). This module turns what a user has (a WAV
file, or any file PyAV decodes where the ``formats`` extra is installed: mp3,
flac, m4a, ogg...) into those codes:

1. decode (:func:`decode_audio`): integer or float PCM, any sample rate, any
   channel count; NaN or infinite samples are refused;
2. prepare (:func:`prepare_reference`): channels mixed down to mono, resampled
   to 24 kHz with soxr, refused when shorter than 3 s or longer than 30 s,
   silent, or clipped on more than 1 % of its samples;
3. encode (:class:`SnacEncoder`): the checkpoint's encoder and quantizer, on
   CUDA when present, several clips in one batch; codebooks interleaved into
   ``(n, 7)`` frames, the exact inverse of :func:`~.tokens.deinterleave`.

A clip of ``T`` samples at 24 kHz gives ``ceil(T / 2048)`` frames (SNAC pads
the end to a whole frame). :func:`drop_repeated_frames` is the training
pipeline's rule for repeated frames (Canopy's data preparation drops a frame
whose first code equals the previous kept frame's), applied where the codes
enter a prompt, not here, so stored codes still decode to the whole clip.

:func:`snac_fingerprint` names a checkpoint by its content (config and every
tensor), so a voice encoded with one SNAC is never decoded by another.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .tokens import CODEBOOK_SIZE, TOKENS_PER_FRAME

__all__ = [
    "MAX_REFERENCE_S",
    "MIN_REFERENCE_S",
    "PreparedReference",
    "ReferenceAudioError",
    "SnacEncoder",
    "decode_audio",
    "drop_repeated_frames",
    "interleave",
    "prepare_reference",
    "snac_fingerprint",
    "snac_fingerprint_of",
]

SAMPLE_RATE = 24_000
MIN_REFERENCE_S = 3.0
MAX_REFERENCE_S = 30.0
#: Peak below this (about -60 dBFS) is silence: nothing to clone.
SILENCE_PEAK = 1e-3
#: A sample this close to full scale counts as clipped.
CLIP_LEVEL = 0.999
#: More clipped samples than this fraction: the clip would clone the distortion.
MAX_CLIPPED_FRACTION = 0.01

CodeFrames = npt.NDArray[np.int64]
Samples = npt.NDArray[np.float32]


class ReferenceAudioError(ValueError):
    """Reference audio that cannot be used; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class PreparedReference:
    """A reference clip ready to encode: mono float32 at 24 kHz, and where it came from."""

    samples: Samples
    source_rate: int
    source_channels: int
    clipped_fraction: float

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode_audio(data: bytes, *, max_s: float = 600.0) -> tuple[npt.NDArray[np.float32], int]:
    """Decode a whole audio file: float samples ``(frames, channels)`` and the sample rate.

    WAV with integer PCM is read here; anything else (float WAV, mp3, flac,
    m4a, ogg...) through PyAV when it is installed (the ``formats`` extra).
    Decoding stops with :class:`ReferenceAudioError` past ``max_s`` seconds, so a
    small compressed upload cannot expand into gigabytes of samples.
    """
    if not data:
        raise ReferenceAudioError("the audio file is empty")
    try:
        samples, rate = _decode_wav(data)
    except (wave.Error, EOFError, ValueError) as wav_error:
        samples, rate = _decode_with_av(data, wav_error, max_s)
    if samples.size == 0:
        raise ReferenceAudioError("the audio file holds no samples")
    if not np.isfinite(samples).all():
        raise ReferenceAudioError("the audio holds NaN or infinite samples: the file is damaged")
    return samples, rate


def _decode_wav(data: bytes) -> tuple[npt.NDArray[np.float32], int]:
    with wave.open(io.BytesIO(data), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:  # unsigned 8-bit
        ints = np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0
        scale = 128.0
    elif width == 3:  # 24-bit: widen each sample to 32 bits, sign kept by the top byte
        triples = np.frombuffer(raw[: len(raw) - len(raw) % 3], dtype=np.uint8).reshape(-1, 3)
        padded = np.zeros((len(triples), 4), dtype=np.uint8)
        padded[:, 1:] = triples
        ints = padded.view("<i4").reshape(-1).astype(np.float32)
        scale = 2.0**31
    elif width in (2, 4):
        ints = np.frombuffer(raw[: len(raw) - len(raw) % width], dtype=f"<i{width}").astype(np.float32)
        scale = 2.0 ** (8 * width - 1)
    else:
        raise ValueError(f"{8 * width}-bit WAV")
    usable = len(ints) - len(ints) % channels
    return (ints[:usable] / scale).reshape(-1, channels), rate


def _decode_with_av(
    data: bytes, wav_error: BaseException, max_s: float
) -> tuple[npt.NDArray[np.float32], int]:
    try:
        import av
    except ImportError:
        raise ReferenceAudioError(
            f"not a readable WAV file ({wav_error}); other formats (mp3, flac, m4a...) need "
            "PyAV: pip install 'orpheus-trio[formats]'"
        ) from None
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ReferenceAudioError("the file has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            pieces: list[npt.NDArray[np.float32]] = []
            decoded = 0
            for frame in container.decode(stream):
                array = frame.to_ndarray()
                pieces.append(_av_frame_to_float(array, frame.format.name, len(frame.layout.channels)))
                decoded += len(pieces[-1])
                if rate and decoded > max_s * rate:
                    raise ReferenceAudioError(
                        f"the clip is longer than {max_s:g} s; at most {max_s:g} s per reference"
                    )
    except ReferenceAudioError:
        raise
    except Exception as error:  # PyAV raises many types for a file it cannot read
        raise ReferenceAudioError(f"not an audio file this machine can decode ({error})") from None
    if not pieces or rate <= 0:
        raise ReferenceAudioError("the file holds no decodable audio")
    return np.concatenate(pieces), rate


def _av_frame_to_float(array: npt.NDArray[Any], fmt: str, channels: int) -> npt.NDArray[np.float32]:
    """A PyAV frame's samples as float ``(n, channels)``: planar is ``(channels, n)``,
    packed is ``(1, n * channels)``."""
    planar = fmt.endswith("p")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        values = array.astype(np.float32)
        if info.min == 0:  # unsigned 8-bit
            values = values - 128.0
        values /= float(-info.min if info.min else 128)
    else:
        values = array.astype(np.float32)
    if planar:
        return np.ascontiguousarray(values.T)
    return values.reshape(-1, channels)


def prepare_reference(
    audio: bytes | str | os.PathLike[str],
    *,
    min_s: float = MIN_REFERENCE_S,
    max_s: float = MAX_REFERENCE_S,
) -> PreparedReference:
    """Decode, mix down, resample to 24 kHz and check one reference clip (see the module docstring)."""
    data = Path(audio).read_bytes() if isinstance(audio, str | os.PathLike) else audio
    samples, rate = decode_audio(data, max_s=max_s)
    duration = len(samples) / rate
    if duration < min_s:
        raise ReferenceAudioError(
            f"the clip is {duration:.2f} s long; a reference needs at least {min_s:g} s of speech"
        )
    if duration > max_s:
        raise ReferenceAudioError(
            f"the clip is {duration:.1f} s long; at most {max_s:g} s per reference "
            "(cut it, or split it into several references with their own transcripts)"
        )
    clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL))
    mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise ReferenceAudioError(
            f"the clip is silent (peak {20 * math.log10(max(peak, 1e-12)):.0f} dBFS): nothing to clone"
        )
    if clipped > MAX_CLIPPED_FRACTION:
        raise ReferenceAudioError(
            f"{clipped:.1%} of the clip's samples are clipped at full scale: the voice would "
            "clone the distortion; record it again at a lower level"
        )
    if rate != SAMPLE_RATE:
        import soxr

        mono = np.asarray(soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)
    return PreparedReference(np.ascontiguousarray(mono), rate, samples.shape[1], clipped)


def interleave(l0: npt.ArrayLike, l1: npt.ArrayLike, l2: npt.ArrayLike) -> CodeFrames:
    """SNAC's three codebooks (``n``, ``2n``, ``4n`` codes) as ``(n, 7)`` Orpheus frames.

    Frame i is ``L0[i], L1[2i], L2[4i], L2[4i+1], L1[2i+1], L2[4i+2], L2[4i+3]``:
    the inverse of :func:`~.tokens.deinterleave`.
    """
    c0, c1, c2 = (np.asarray(c, dtype=np.int64) for c in (l0, l1, l2))
    n = len(c0)
    if c0.ndim != 1 or c1.shape != (2 * n,) or c2.shape != (4 * n,):
        raise ValueError(f"codebooks must have n, 2n, 4n codes, got {c0.shape}, {c1.shape}, {c2.shape}")
    pairs, quads = c1.reshape(n, 2), c2.reshape(n, 4)
    frames = np.stack(
        [c0, pairs[:, 0], quads[:, 0], quads[:, 1], pairs[:, 1], quads[:, 2], quads[:, 3]], axis=1
    )
    if frames.size and (frames.min() < 0 or frames.max() >= CODEBOOK_SIZE):
        raise ValueError(f"codes must be in 0..{CODEBOOK_SIZE - 1}")
    return frames


def drop_repeated_frames(frames: CodeFrames) -> CodeFrames:
    """Frames without those whose first code repeats the previous kept frame's.

    The rule of Canopy's data preparation for Orpheus (``remove_duplicate_frames``
    in their fine-tuning data notebook), so reference codes in a prompt look like
    what the model was trained on.
    """
    if len(frames) == 0:
        return frames
    keep = [0]
    for index in range(1, len(frames)):
        if frames[index, 0] != frames[keep[-1], 0]:
            keep.append(index)
    return frames[keep]


def snac_fingerprint(config: Mapping[str, Any], state: Mapping[str, Any]) -> str:
    """``sha256:...`` of a SNAC checkpoint's config and tensors (names, dtypes, shapes, bytes).

    The same weights saved as ``pytorch_model.bin`` or ``model.safetensors`` have
    the same fingerprint; any changed weight gives another.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(config), sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"\n{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


class SnacEncoder:
    """SNAC 24 kHz audio to Orpheus code frames; ``fingerprint`` names the checkpoint."""

    def __init__(self, model: Any, *, fingerprint: str, device: str | None = None) -> None:
        import torch

        from .devices import checked_device
        from .snac_decoder import ORPHEUS_VQ_STRIDES, UnsupportedSnacConfig

        strides = [int(s) for s in getattr(model, "vq_strides", [])]
        if strides != ORPHEUS_VQ_STRIDES or int(model.sampling_rate) != SAMPLE_RATE:
            raise UnsupportedSnacConfig(
                f"Orpheus codes need the 24 kHz SNAC with vq_strides {ORPHEUS_VQ_STRIDES}; "
                f"this one is {model.sampling_rate} Hz with {strides}"
            )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = checked_device(device)
        self.fingerprint = fingerprint
        #: Samples per frame: SNAC pads a clip's end to a multiple of this.
        self.frame_samples = int(np.prod(model.encoder_rates)) * ORPHEUS_VQ_STRIDES[0]
        model.decoder = None  # the decoder is SnacDecoder's; an encoder does not need it
        self._model = model.eval().requires_grad_(False).to(self.device)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], *, device: str | None = None, local_files_only: bool = False
    ) -> SnacEncoder:
        """Load the encoder from a SNAC checkpoint (the decoder's files): a directory or a hub id."""
        import snac
        import torch

        from .snac_decoder import UnsupportedSnacConfig, _resolve_files

        config_path, weights_path = _resolve_files(path, local_files_only)
        config: Any = json.loads(Path(config_path).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise UnsupportedSnacConfig(f"{config_path} is not a SNAC config (not a JSON object)")
        if weights_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights_path))
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        try:
            model = snac.SNAC(**config)
            model.load_state_dict(state)
        except (TypeError, RuntimeError) as error:
            first_line = str(error).splitlines()[0]
            raise UnsupportedSnacConfig(f"{path} is not a usable SNAC checkpoint: {first_line}") from None
        return cls(model, fingerprint=snac_fingerprint(config, state), device=device)

    def frames_for(self, samples: int) -> int:
        """Frames a clip of ``samples`` 24 kHz samples encodes to."""
        return -(-samples // self.frame_samples)

    def encode(self, samples: Samples) -> CodeFrames:
        """One mono 24 kHz clip to ``(frames_for(len), 7)`` code frames."""
        return self.encode_batch([samples])[0]

    def encode_batch(self, clips: Sequence[Samples]) -> list[CodeFrames]:
        """Several clips in one forward pass (zero-padded to the longest, then cut to each)."""
        import torch

        if not clips:
            return []
        longest = max(len(c) for c in clips)
        if longest == 0:
            raise ValueError("cannot encode empty clips")
        batch = np.zeros((len(clips), 1, longest), dtype=np.float32)
        for row, clip in enumerate(clips):
            batch[row, 0, : len(clip)] = clip
        with torch.inference_mode():
            codes = self._model.encode(torch.from_numpy(batch).to(self.device))
        books = [c.cpu().numpy().astype(np.int64) for c in codes]
        out = []
        for row, clip in enumerate(clips):
            n = self.frames_for(len(clip))
            out.append(interleave(books[0][row, :n], books[1][row, : 2 * n], books[2][row, : 4 * n]))
        assert all(f.shape[1] == TOKENS_PER_FRAME for f in out)
        return out


def snac_fingerprint_of(path: str | os.PathLike[str], *, local_files_only: bool = True) -> str:
    """:func:`snac_fingerprint` of a SNAC checkpoint directory (or a hub id already
    downloaded, as the decoder's loading did), without building the model."""
    import torch

    from .snac_decoder import _resolve_files

    config_path, weights_path = _resolve_files(path, local_files_only)
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    if weights_path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights_path))
    else:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    return snac_fingerprint(config, state)
