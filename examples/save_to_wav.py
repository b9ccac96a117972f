"""Stream speech straight into a WAV file, then look at it with numpy.

python examples/save_to_wav.py ["Some text."] [out.wav]
"""

from __future__ import annotations

import sys

import trio
from _service import open_tts

from orpheus_trio.audio import read_wav, save_wav_stream


async def main(text: str, path: str) -> None:
    async with open_tts() as tts:
        # Written chunk by chunk as it arrives, under a temporary name, renamed at the end.
        seconds = await save_wav_stream(tts.stream(text, voice="tara"), path)
    clip = read_wav(path)
    samples = clip.to_numpy()  # int16, one value per sample
    print(
        f"{path}: {seconds:.2f} s, {len(samples)} samples at {clip.format.sample_rate} Hz, rms {clip.rms():.3f}"
    )


if __name__ == "__main__":
    text = sys.argv[1] if len(sys.argv) > 1 else "Hello from Orpheus."
    trio.run(main, text, sys.argv[2] if len(sys.argv) > 2 else "hello.wav")
