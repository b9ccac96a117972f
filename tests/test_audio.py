"""WAV writing (incremental, to files and pipes), numpy conversion and safe concatenation."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.lowlevel

from orpheus_trio.audio import (
    AudioFormat,
    Clip,
    WavWriter,
    collect,
    concatenate,
    read_wav,
    save_wav_stream,
)


def tone(n: int, amplitude: int = 1000) -> bytes:
    t = np.arange(n)
    return (amplitude * np.sin(2 * np.pi * 440 * t / 24_000)).astype("<i2").tobytes()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await trio.lowlevel.checkpoint()
        yield part


async def test_save_wav_stream_writes_every_chunk_with_correct_header(
    tmp_path: Path,
) -> None:
    parts = [tone(100), tone(2400), b"", tone(1)]
    path = tmp_path / "out.wav"
    duration = await save_wav_stream(chunks(*parts), path)
    assert duration == pytest.approx(2501 / 24_000)
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24_000, 1, 2)
        assert w.getnframes() == 2501
        assert w.readframes(3000) == b"".join(parts)
    raw = path.read_bytes()
    assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


async def test_failed_stream_leaves_no_file_under_final_or_temporary_name(
    tmp_path: Path,
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield tone(10)
        raise RuntimeError("cut")

    with pytest.raises(RuntimeError, match="cut"):
        await save_wav_stream(broken(), tmp_path / "out.wav")
    assert list(tmp_path.iterdir()) == []


async def test_odd_byte_chunk_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 bytes"):
        await save_wav_stream(chunks(b"abc"), tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []


def test_wav_writer_on_a_pipe_marks_length_unknown_and_decoders_still_read_it() -> None:
    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    pipe = Pipe()
    with WavWriter(pipe) as writer:
        writer.write(tone(480))
    raw = pipe.getvalue()
    assert struct.unpack("<I", raw[4:8])[0] == 0xFFFFFFFF
    assert raw[44:] == tone(480)
    # The stdlib reader takes the unknown data length at its word and reads to the end of the file.
    with wave.open(io.BytesIO(raw), "rb") as w:
        assert w.getframerate() == 24_000
        assert w.readframes(10_000) == tone(480)


def test_wav_writer_to_stdout_of_a_subprocess_is_readable() -> None:
    code = (
        "import sys; from orpheus_trio.audio import WavWriter\n"
        "w = WavWriter(sys.stdout.buffer); w.write(b'\\x01\\x00' * 24000); w.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True
    ).stdout
    assert out[:4] == b"RIFF" and len(out) == 44 + 48_000


def test_clip_numpy_round_trip_duration_and_rms() -> None:
    samples = np.array([0, 16384, -16384, 32767, -32768], dtype=np.int16)
    clip = Clip.from_numpy(samples)
    assert clip.to_numpy().tolist() == samples.tolist()
    assert clip.frames == 5 and clip.duration_s == pytest.approx(5 / 24_000)
    assert clip.to_float32()[1] == pytest.approx(0.5)
    full_scale = Clip.from_numpy(np.full(100, -32768, dtype=np.int16))
    assert full_scale.rms() == pytest.approx(1.0)
    assert Clip(b"").rms() == 0.0


def test_stereo_clip_reshapes_and_refuses_partial_frames() -> None:
    stereo = AudioFormat(48_000, 2, 2)
    clip = Clip(b"\x01\x00\x02\x00" * 3, stereo)
    assert clip.to_numpy().shape == (3, 2)
    with pytest.raises(ValueError, match="4-byte frames"):
        Clip(b"\x00" * 6, stereo)


def test_concatenate_joins_with_silent_gap() -> None:
    a, b = Clip(tone(10)), Clip(tone(20, 2000))
    joined = concatenate([a, b], gap_s=2 / 24_000)
    assert joined.pcm == a.pcm + b"\x00" * 4 + b.pcm
    assert concatenate([]).pcm == b""


def test_concatenate_refuses_mismatched_formats_naming_the_clip() -> None:
    other = Clip(tone(10), AudioFormat(22_050, 1, 2))
    with pytest.raises(ValueError, match="clip 2 is 22050 Hz"):
        concatenate([Clip(tone(10)), Clip(tone(10)), other])
    with pytest.raises(ValueError, match="gap_s"):
        concatenate([Clip(b"")], gap_s=-1)


def test_save_and_read_wav_round_trip(tmp_path: Path) -> None:
    clip = Clip(tone(1234), AudioFormat(16_000, 1, 2))
    clip.save_wav(tmp_path / "c.wav")
    assert read_wav(tmp_path / "c.wav") == clip


async def test_collect_gathers_stream() -> None:
    clip = await collect(chunks(tone(5), tone(7)))
    assert clip.pcm == tone(5) + tone(7)
