"""A long text: split into pieces, the next one synthesized while the current one streams.

python examples/long_text.py [FILE] [out.wav]
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import trio
from _service import open_tts

from orpheus_trio.audio import WavWriter
from orpheus_trio.text.longtext import open_ordered_stream
from orpheus_trio.text.split import split_for_synthesis, split_text

STORY = """\
The lighthouse keeper climbed the spiral stairs as the sun went down. Two hundred and twelve steps,
the same as every evening for thirty years. At the top he wound the clockwork, trimmed the wick and
watched the beam sweep out across the water.

Far out, a small boat was making for the harbour. Its lantern bobbed in the swell. He followed it with
his eyes until it rounded the point and slipped behind the breakwater, safe.

Then he poured himself a cup of tea, opened his logbook, and wrote: calm sea, light wind from the
west, one boat home. Below him the waves kept up their slow and patient work against the rocks.
"""


async def main(text: str, path: str) -> None:
    # tts.stream() splits long text by itself (split="auto": over 400 characters). This shows
    # the pieces it makes, then the same pipeline spelled out with smaller pieces.
    print(f"tts.stream() would send {len(split_for_synthesis(text))} pieces")
    pieces = split_text(text, max_chars=200)
    print(f"{len(pieces)} pieces")
    async with open_tts() as tts:
        started = trio.current_time()
        with open(path, "wb") as file, WavWriter(file) as wav:
            # Each piece is a normal hedged request; audio comes out strictly in order, and at
            # most one piece is synthesized ahead of the one being written (prefetch=1).
            def stream_piece(piece: str) -> AsyncIterator[bytes]:
                return tts.stream(piece, split="never")

            async with open_ordered_stream(pieces, stream_piece, prefetch=1) as audio:
                async for pcm in audio:
                    if wav.data_bytes == 0:
                        print(f"first audio after {trio.current_time() - started:.3f} s")
                    wav.write(pcm)
        seconds = trio.current_time() - started
        print(f"{path}: {wav.duration_s:.1f} s of audio in {seconds:.2f} s")


if __name__ == "__main__":
    source = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else STORY
    trio.run(main, source, sys.argv[2] if len(sys.argv) > 2 else "long.wav")
