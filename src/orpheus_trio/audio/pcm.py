"""Audio helpers: PCM clips, incremental WAV writing from a stream, numpy, safe concatenation.

Orpheus audio is mono signed 16-bit little-endian PCM at 24 kHz. A :class:`Clip`
carries its format with the bytes so that joining clips of different formats
is an error rather than silent noise.
"""

from __future__ import annotations

import os
import struct
import wave
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

import numpy as np
import numpy.typing as npt

__all__ = [
    "ORPHEUS_FORMAT",
    "SAMPLE_RATE",
    "AudioFormat",
    "Clip",
    "WavWriter",
    "collect",
    "concatenate",
    "read_wav",
    "save_wav_stream",
    "temporary_path",
    "wav_header",
]

#: The v1 contract's one sample rate: every Orpheus stream is mono s16le at 24 kHz.
SAMPLE_RATE = 24_000
#: The RIFF size fields when the final size is unknown (a pipe): the largest value, as sox and ffmpeg write.
_UNKNOWN_SIZE = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Sample rate, channel count and bytes per sample of integer PCM."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    sample_width: int = 2

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample on every channel)."""
        return self.channels * self.sample_width

    def __str__(self) -> str:
        return f"{self.sample_rate} Hz, {self.channels} ch, {8 * self.sample_width}-bit"


#: What every Orpheus stream carries.
ORPHEUS_FORMAT = AudioFormat()


@dataclass(frozen=True, slots=True)
class Clip:
    """PCM bytes with their format. Orpheus format unless told otherwise."""

    pcm: bytes
    format: AudioFormat = ORPHEUS_FORMAT

    def __post_init__(self) -> None:
        if len(self.pcm) % self.format.frame_bytes:
            raise ValueError(
                f"{len(self.pcm)} bytes is not a whole number of {self.format.frame_bytes}-byte frames"
            )

    @property
    def frames(self) -> int:
        """Number of frames (samples per channel)."""
        return len(self.pcm) // self.format.frame_bytes

    @property
    def duration_s(self) -> float:
        return self.frames / self.format.sample_rate

    def to_numpy(self) -> npt.NDArray[np.int16]:
        """The samples as int16, shape ``(frames,)`` for mono, ``(frames, channels)`` otherwise."""
        if self.format.sample_width != 2:
            raise ValueError(
                f"to_numpy supports 16-bit PCM, this clip is {self.format}"
            )
        samples = np.frombuffer(self.pcm, dtype="<i2").astype(np.int16, copy=False)
        return (
            samples
            if self.format.channels == 1
            else samples.reshape(-1, self.format.channels)
        )

    def to_float32(self) -> npt.NDArray[np.float32]:
        """The samples scaled to [-1, 1), as most audio libraries want them."""
        return (self.to_numpy().astype(np.float32) / 32768.0).astype(
            np.float32, copy=False
        )

    def rms(self) -> float:
        """Root mean square level in [0, 1] (0 for an empty clip)."""
        if not self.pcm:
            return 0.0
        return float(np.sqrt(np.mean(np.square(self.to_float32(), dtype=np.float64))))

    @classmethod
    def from_numpy(
        cls, samples: npt.NDArray[np.generic], sample_rate: int = SAMPLE_RATE
    ) -> Clip:
        """A clip from int16 samples (1-D mono, or 2-D frames x channels)."""
        if samples.dtype != np.int16:
            raise ValueError(f"expected int16 samples, got {samples.dtype}")
        channels = 1 if samples.ndim == 1 else int(samples.shape[1])
        return cls(
            samples.astype("<i2").tobytes(), AudioFormat(sample_rate, channels, 2)
        )

    def save_wav(self, path: str | os.PathLike[str]) -> None:
        """Write the clip as a WAV file, through a temporary name and a rename."""
        final = Path(path)
        tmp = temporary_path(final)
        try:
            with open(tmp, "wb") as f, WavWriter(f, self.format) as writer:
                writer.write(self.pcm)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def temporary_path(final: Path) -> Path:
    """Where to write ``final`` before renaming it: same folder (so the rename is atomic), hidden."""
    return final.with_name(f".{final.name}.{os.getpid()}.part")


def wav_header(fmt: AudioFormat = ORPHEUS_FORMAT, data_bytes: int | None = None) -> bytes:
    """The 44-byte header of an integer-PCM WAV file; ``None``: length unknown (streaming)."""
    if data_bytes is None:
        data_size = riff_size = _UNKNOWN_SIZE
    else:
        data_size, riff_size = data_bytes, 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + struct.pack(
            "<4sIHHIIHH",
            b"fmt ",
            16,
            1,  # integer PCM
            fmt.channels,
            fmt.sample_rate,
            fmt.sample_rate * fmt.frame_bytes,
            fmt.frame_bytes,
            8 * fmt.sample_width,
        )
        + b"data"
        + struct.pack("<I", data_size)
    )


class WavWriter:
    """Writes a WAV header, then PCM as it arrives; fixes the sizes on close when it can seek.

    On a pipe (``-o -``) the sizes cannot be patched, so the header says "unknown
    length" (0xFFFFFFFF), which sox, ffmpeg and most players accept.
    """

    def __init__(self, file: BinaryIO, fmt: AudioFormat = ORPHEUS_FORMAT) -> None:
        self._file = file
        self.format = fmt
        self.data_bytes = 0
        try:
            self._seekable = file.seekable()
        except (AttributeError, OSError, ValueError):
            self._seekable = False
        self._start = file.tell() if self._seekable else 0
        self._closed = False
        file.write(wav_header(fmt))

    def write(self, pcm: bytes) -> None:
        if self._closed:
            raise ValueError("write to a closed WavWriter")
        if len(pcm) % self.format.frame_bytes:
            raise ValueError(
                f"chunk of {len(pcm)} bytes is not a whole number of {self.format.frame_bytes}-byte frames"
            )
        if self.data_bytes + len(pcm) > _UNKNOWN_SIZE - 36:
            raise ValueError("WAV files cannot hold more than 4 GiB of audio")
        self._file.write(pcm)
        self.data_bytes += len(pcm)

    @property
    def duration_s(self) -> float:
        return self.data_bytes / self.format.frame_bytes / self.format.sample_rate

    def close(self) -> None:
        """Patch the sizes into the header (seekable files) and flush. The file stays open."""
        if self._closed:
            return
        self._closed = True
        if self._seekable:
            end = self._file.tell()
            self._file.seek(self._start)
            self._file.write(wav_header(self.format, self.data_bytes))
            self._file.seek(end)
        self._file.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_wav(path: str | os.PathLike[str]) -> Clip:
    """Read an integer-PCM WAV file into a clip."""
    with wave.open(os.fspath(path), "rb") as w:
        fmt = AudioFormat(w.getframerate(), w.getnchannels(), w.getsampwidth())
        return Clip(w.readframes(w.getnframes()), fmt)


def concatenate(clips: Iterable[Clip], *, gap_s: float = 0.0) -> Clip:
    """Join clips end to end, with ``gap_s`` of silence between them.

    Every clip must have the same format: mixing rates or channel counts would
    play back at the wrong speed, so it is refused with a message naming the clip.
    """
    clips = list(clips)
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0, got {gap_s}")
    if not clips:
        return Clip(b"")
    fmt = clips[0].format
    for index, clip in enumerate(clips[1:], start=1):
        if clip.format != fmt:
            raise ValueError(
                f"clip {index} is {clip.format}, clip 0 is {fmt}: resample before joining"
            )
    gap = bytes(round(gap_s * fmt.sample_rate) * fmt.frame_bytes)
    return Clip(gap.join(clip.pcm for clip in clips), fmt)


async def collect(stream: AsyncIterable[bytes]) -> Clip:
    """Gather a PCM stream into one Orpheus-format clip."""
    parts = [pcm async for pcm in stream]
    return Clip(b"".join(parts))


async def save_wav_stream(
    stream: AsyncIterable[bytes],
    path: str | os.PathLike[str],
    fmt: AudioFormat = ORPHEUS_FORMAT,
) -> float:
    """Write a PCM stream to a WAV file as it arrives; return the audio duration in seconds.

    The file is written under a temporary name and renamed when the stream ends,
    so a failed or cancelled stream never leaves a half-written file under ``path``.
    Writes go to the OS page cache (microseconds per chunk), so they are done inline.
    """
    final = Path(path)
    tmp = temporary_path(final)
    try:
        with open(tmp, "wb") as f:
            writer = WavWriter(f, fmt)
            async for pcm in stream:
                writer.write(pcm)
            writer.close()
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        # A generator left mid-way (a write failed) is closed now, not when collected.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return writer.duration_s
