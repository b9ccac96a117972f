"""Play speech as it arrives, on asyncio: the first sound comes after the first chunk.

    python examples/realtime_playback.py ["text"]

Plays through ``aplay`` or ``ffplay`` when one is installed. Piped, it writes
the raw PCM (s16le, mono, 24 kHz) to stdout instead, e.g. ``... | aplay -f S16_LE
-r 24000``. On a terminal with neither player it says so and writes
``realtime_playback.wav`` (raw PCM on a terminal would only be noise).
Prints the time to first audio and the real-time factor on stderr.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time

from _asyncio_service import api_key, service_urls

from orpheus_trio import SAMPLE_RATE, OrpheusTTS
from orpheus_trio.audio import save_wav_stream

PLAYERS = {
    "aplay": ["aplay", "-q", "-f", "S16_LE", "-c", "1", "-r", str(SAMPLE_RATE)],
    "ffplay": ["ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet",
               "-f", "s16le", "-ch_layout", "mono", "-ar", str(SAMPLE_RATE), "-"],
}


FALLBACK_WAV = "realtime_playback.wav"


async def main(text: str) -> None:
    player = next((cmd for name, cmd in PLAYERS.items() if shutil.which(name)), None)
    if player is None and sys.stdout.isatty():
        print(
            f"neither aplay nor ffplay is installed, and raw PCM on a terminal is noise: "
            f"writing {FALLBACK_WAV} instead (or pipe it: ... | aplay -f S16_LE -r {SAMPLE_RATE})",
            file=sys.stderr,
        )
        async with OrpheusTTS(service_urls(), api_key=api_key()) as tts:
            seconds = await save_wav_stream(tts.stream(text), FALLBACK_WAV)
        print(f"wrote {FALLBACK_WAV}: {seconds:.2f} s of audio", file=sys.stderr)
        return
    process = (
        await asyncio.create_subprocess_exec(*player, stdin=asyncio.subprocess.PIPE)
        if player and sys.stdout.isatty()
        else None
    )
    started, first, samples = time.perf_counter(), None, 0
    async with OrpheusTTS(service_urls(), api_key=api_key()) as tts:
        async for pcm in tts.stream(text):
            first = first if first is not None else time.perf_counter() - started
            samples += len(pcm) // 2
            if process is not None and process.stdin is not None:
                process.stdin.write(pcm)
                await process.stdin.drain()  # the player's pace is the real-time pace
            else:
                sys.stdout.buffer.write(pcm)
                sys.stdout.buffer.flush()
    if process is not None and process.stdin is not None:
        process.stdin.close()
        await process.wait()
    elapsed = time.perf_counter() - started
    print(
        f"first audio after {1000 * (first or 0):.0f} ms; "
        f"{samples / SAMPLE_RATE:.2f} s of audio in {elapsed:.2f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "Playing as it arrives."))
