"""Orpheus as the voice of a LiveKit agent: an LLM's tokens in, speech out, written to a WAV file.

    pip install 'orpheus-trio[livekit]'
    python examples/livekit_agent.py [out.wav]

In a LiveKit agent the plugin is the session's TTS, and LiveKit feeds it the
LLM's tokens and plays the audio into the room:

    from livekit.agents import AgentSession
    from orpheus_trio.integrations.livekit import TTS
    session = AgentSession(stt=..., llm=..., tts=TTS(url="http://127.0.0.1:8000", voice="tara"))

Here, with no LiveKit server, a fake LLM writes at 30 tokens/s into the
plugin's ``stream()`` exactly as LiveKit would, and the audio is collected:
the first sentence is heard while the rest is still being written.
"""

from __future__ import annotations

import asyncio
import sys
import time
import wave

from _asyncio_service import service_urls

from orpheus_trio.integrations.livekit import TTS

REPLY = "Hi! I'm your assistant. The weather today is sunny, with a light breeze. Anything else?"


async def main(out: str) -> None:
    tts = TTS(url=service_urls()[0], voice="tara")
    stream = tts.stream()

    async def llm() -> None:
        for word in REPLY.split(" "):
            stream.push_text(word + " ")
            await asyncio.sleep(1 / 30)  # 30 tokens/s
        stream.end_input()

    start = time.perf_counter()
    writer = asyncio.create_task(llm())
    audio = bytearray()
    first_audio_s = None
    async with stream:
        async for event in stream:
            if first_audio_s is None:
                first_audio_s = time.perf_counter() - start
            audio += event.frame.data
    await writer
    await tts.aclose()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(tts.sample_rate)
        wav.writeframes(bytes(audio))
    print(f"wrote {out}: {len(audio) / 2 / tts.sample_rate:.2f} s of speech, "
          f"first audio after {first_audio_s:.2f} s of a {len(REPLY.split())}-word reply")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "livekit_agent.wav"))
