"""Many texts at once with a bound on requests in flight (a trio.CapacityLimiter).

python examples/concurrent_synthesis.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from _service import open_tts

from orpheus_trio.audio import concatenate, read_wav, save_wav_stream
from orpheus_trio.client import OrpheusTTS

LINES = [
    "Good morning.",
    "The weather today is mild and clear.",
    "Your first meeting starts at ten.",
    "Traffic on the bridge is light.",
    "Remember to water the plants.",
    "Have a pleasant day.",
]


async def say(
    tts: OrpheusTTS, limiter: trio.CapacityLimiter, index: int, text: str, out_dir: Path
) -> None:
    async with limiter:  # at most limiter.total_tokens requests at a time
        started = trio.current_time()
        seconds = await save_wav_stream(tts.stream(text), out_dir / f"{index:02d}.wav")
        print(
            f"{index:02d}: {seconds:.2f} s of audio in {trio.current_time() - started:.2f} s  {text!r}"
        )


async def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    limiter = trio.CapacityLimiter(3)
    async with open_tts() as tts, trio.open_nursery() as nursery:
        for index, text in enumerate(LINES):
            nursery.start_soon(say, tts, limiter, index, text, out_dir)
    # Join the clips in order, with a short pause between them (formats are checked).
    clips = [read_wav(out_dir / f"{i:02d}.wav") for i in range(len(LINES))]
    concatenate(clips, gap_s=0.3).save_wav(out_dir / "all.wav")
    print(f"{out_dir / 'all.wav'}: everything, in order")


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1] if len(sys.argv) > 1 else "concurrent-out"))
