"""The quickstart on asyncio: stream one reply to a WAV file, then several at once.

    python examples/asyncio_quickstart.py ["text"] [out.wav]

The same code runs under Trio with ``trio.run(main)`` in place of
``asyncio.run(main())`` (see save_to_wav.py).
"""

from __future__ import annotations

import asyncio
import sys

from _asyncio_service import api_key, service_urls

from orpheus_trio import OrpheusTTS
from orpheus_trio.audio import save_wav_stream


async def main(text: str, out: str) -> None:
    async with OrpheusTTS(service_urls(), api_key=api_key()) as tts:
        # Stream: audio is written as it arrives.
        seconds = await save_wav_stream(tts.stream(text), out)
        print(f"wrote {out}: {seconds:.2f} s of audio")
        # Several requests at once, each hedged and failed over on its own.
        lines = ["One.", "Two, a little longer.", "Three, the longest line of all."]
        replies = await asyncio.gather(*(tts.synthesize(line) for line in lines))
        for line, pcm in zip(lines, replies):
            print(f"{line!r}: {len(pcm) / 48_000:.2f} s")


if __name__ == "__main__":
    text = sys.argv[1] if len(sys.argv) > 1 else "Hello from asyncio."
    out = sys.argv[2] if len(sys.argv) > 2 else "quickstart.wav"
    asyncio.run(main(text, out))
