"""Encoder libraries compared: CPU ms per audio second, encoding a stream chunk by chunk.

Each candidate encodes the same 24 kHz mono speech-like signal, fed in the
chunks a server gets from its engine (2400 samples = 100 ms), to bytes in
memory, side by side in one run:

- PyAV (ffmpeg's encoders): mp3 (libmp3lame), opus (libopus in Ogg), aac, flac;
  the server's own PyAV encoder class (muxing into memory included);
- lameenc (LAME): mp3;
- soundfile (libsndfile): flac, mp3, opus (Ogg). libsndfile seeks back to patch
  headers, so it needs a seekable output: it cannot hand bytes out as they are
  made, which a streaming answer needs; the row shows its CPU cost anyway.

Also shows the bytes per audio second and whether the first chunk already
produced output (what makes the first bytes leave early).

    .venv/bin/python bench/encoders.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from orpheus_trio.audio import formats

RATE = 24_000
CHUNK = 2_400


def speech_like(seconds: float) -> np.ndarray:
    """Harmonics of a wandering pitch, syllable-rate envelope, a little noise: s16."""
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    noise = np.random.default_rng(0).standard_normal(t.size) * 0.05
    signal = (voice * envelope + noise) * 6000
    return np.clip(signal, -32768, 32767).astype("<i2")


Run = Callable[[list[bytes]], tuple[int, bool]]


def pyav(format: str) -> Run:
    def run(chunks: list[bytes]) -> tuple[int, bool]:
        encoder = formats._AvEncoder(formats._CODECS[format])
        first = encoder.encode(chunks[0])
        total = len(first) + sum(len(encoder.encode(c)) for c in chunks[1:])
        return total + len(encoder.finish()), bool(first)

    return run


def lameenc_mp3(chunks: list[bytes]) -> tuple[int, bool]:
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(64)
    encoder.set_in_sample_rate(RATE)
    encoder.set_channels(1)
    encoder.set_quality(5)
    first = bytes(encoder.encode(chunks[0]))
    total = len(first) + sum(len(encoder.encode(c)) for c in chunks[1:])
    return total + len(encoder.flush()), bool(first)


def soundfile_format(format: str, subtype: str) -> Run:
    def run(chunks: list[bytes]) -> tuple[int, bool]:
        import soundfile

        out = io.BytesIO()
        with soundfile.SoundFile(
            out, "w", samplerate=RATE, channels=1, format=format, subtype=subtype
        ) as sink:
            sink.write(np.frombuffer(chunks[0], dtype="<i2"))
            first = out.tell() > 0
            for chunk in chunks[1:]:
                sink.write(np.frombuffer(chunk, dtype="<i2"))
        return len(out.getvalue()), first

    return run


CANDIDATES: list[tuple[str, str, Run]] = [
    ("mp3", "PyAV (libmp3lame 64k)", pyav("mp3")),
    ("mp3", "lameenc (64k, q5)", lameenc_mp3),
    ("mp3", "soundfile (libsndfile)", soundfile_format("MP3", "MPEG_LAYER_III")),
    ("opus", "PyAV (libopus 32k, Ogg)", pyav("opus")),
    ("opus", "soundfile (libsndfile)", soundfile_format("OGG", "OPUS")),
    ("aac", "PyAV (ffmpeg aac 64k, ADTS)", pyav("aac")),
    ("flac", "PyAV (ffmpeg flac)", pyav("flac")),
    ("flac", "soundfile (libsndfile)", soundfile_format("FLAC", "PCM_16")),
]


def measure(run: Run, chunks: list[bytes], audio_s: float, repeats: int) -> dict[str, Any]:
    run(chunks[:5])  # warm up: load the library, build tables
    best = float("inf")
    for _ in range(repeats):
        cpu_before = time.process_time()
        size, first = run(chunks)
        best = min(best, time.process_time() - cpu_before)
    return {
        "cpu_ms_per_audio_s": round(1000 * best / audio_s, 3),
        "bytes_per_audio_s": round(size / audio_s),
        "output_after_first_chunk": first,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter signal (< 30 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args()
    audio_s = 10.0 if args.quick else 60.0
    pcm = speech_like(audio_s).tobytes()
    chunks = [pcm[i : i + 2 * CHUNK] for i in range(0, len(pcm), 2 * CHUNK)]
    rows = []
    for format, library, run in CANDIDATES:
        try:
            row = measure(run, chunks, audio_s, 3)
        except Exception as error:  # noqa: BLE001 - a library without this codec: say so
            row = {"error": f"{type(error).__name__}: {error}"[:80]}
        rows.append({"format": format, "library": library, **row})
    print(f"{audio_s:g} s of 24 kHz mono speech-like audio in {CHUNK}-sample chunks, best of 3")
    print(f"{'format':<6} {'library':<30} {'CPU ms/audio s':>15} {'bytes/audio s':>14} {'1st chunk out':>14}")
    for row in rows:
        if "error" in row:
            print(f"{row['format']:<6} {row['library']:<30} {row['error']}")
            continue
        print(
            f"{row['format']:<6} {row['library']:<30} {row['cpu_ms_per_audio_s']:>15} "
            f"{row['bytes_per_audio_s']:>14} {str(row['output_after_first_chunk']):>14}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"audio_s": audio_s, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
