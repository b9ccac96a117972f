"""Reference clips for the voice-cloning tests: WAV bytes made here, never downloaded."""

from __future__ import annotations

import io
import wave

import numpy as np
import numpy.typing as npt


def speechlike(seconds: float, rate: int, *, channels: int = 1, seed: int = 0) -> npt.NDArray[np.float32]:
    """A voiced-sounding signal (harmonics under a syllable-rate envelope), peak about 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k for k, f in enumerate((140, 280, 420, 900), 1))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    mono = (0.25 * tone * envelope).astype(np.float32)
    return np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1)


def wav_bytes(samples: npt.NDArray[np.float32], rate: int, *, width: int = 2) -> bytes:
    """``(frames, channels)`` floats as an integer-PCM WAV file."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    scale = 2 ** (8 * width - 1) - 1
    ints = np.rint(np.clip(frames, -1, 1) * scale).astype("<i4")
    if width == 3:  # the low three bytes of each little-endian int32
        raw = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = ints.astype(f"<i{width}").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return out.getvalue()


def reference_wav(seconds: float = 3.0, rate: int = 24_000, *, channels: int = 1, seed: int = 0) -> bytes:
    return wav_bytes(speechlike(seconds, rate, channels=channels, seed=seed), rate)


def float_wav_bytes(samples: npt.NDArray[np.float32], rate: int) -> bytes:
    """A 32-bit float WAV (format 3): Python's wave module cannot read it, PyAV can."""
    import struct

    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (
        b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", len(data)) + data
    )  # fmt: skip
