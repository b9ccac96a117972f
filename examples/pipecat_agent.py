"""Orpheus as the voice of a Pipecat pipeline: speak two lines to a WAV file, the second interrupted.

    pip install 'orpheus-trio[pipecat]'
    python examples/pipecat_agent.py [out.wav]

In a real agent the frames come from an LLM service and the audio goes to a
transport (WebRTC, a phone line); here a small sink collects the audio. The
second line, several sentences long, is interrupted as soon as its first audio
arrives, as a user barging in would: Pipecat cancels the TTS task, the Orpheus
request stops on the server, and the sentences not yet spoken never are. The
example prints how much of each line was heard.

The first line laughs (``<chuckle>``) only if the service performs emotion
tags (Orpheus does; espeak, the stand-in started without $ORPHEUS_URLS, would
read the tag out): ``GET /v1/system`` lists them as ``emotion_tags``.
"""

from __future__ import annotations

import asyncio
import sys
import wave

import httpx
from _asyncio_service import service_urls
from pipecat.frames.frames import EndFrame, Frame, InterruptionFrame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from orpheus_trio.integrations.pipecat import OrpheusTTSService


FIRST_LINE = "Hi! I'm your assistant. {laugh}How can I help?"
SECOND_LINE = (
    "Let me tell you a very long story about trains. It starts in a small town. "
    "Every morning the first train left at six. Nobody knew who drove it. "
    "One day a child decided to find out."
)


class AudioSink(FrameProcessor):
    """Keeps the TTS audio (a transport would play it), line by line."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[bytearray] = []
        self.audio_of_line = [asyncio.Event(), asyncio.Event()]

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and self.lines:
            self.lines[-1] += frame.audio
            self.audio_of_line[len(self.lines) - 1].set()
        await self.push_frame(frame, direction)


def performs_laughter(url: str) -> bool:
    system = httpx.get(f"{url}/v1/system", timeout=10).json()
    return "chuckle" in system.get("emotion_tags", [])


async def main(out: str) -> None:
    url = service_urls()[0]
    laugh = "<chuckle> " if performs_laughter(url) else ""
    tts = OrpheusTTSService(url=url, voice="tara", sample_rate=24_000)
    sink = AudioSink()
    worker = PipelineWorker(Pipeline([tts, sink]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    async def speak() -> None:
        await started.wait()
        sink.lines.append(bytearray())
        await worker.queue_frame(TTSSpeakFrame(FIRST_LINE.format(laugh=laugh)))
        await sink.audio_of_line[0].wait()
        await asyncio.sleep(3)  # the first line is over (a transport would be playing it)
        sink.lines.append(bytearray())
        await worker.queue_frame(TTSSpeakFrame(SECOND_LINE))
        await sink.audio_of_line[1].wait()
        await worker.queue_frame(InterruptionFrame())  # the user starts talking
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), speak())
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24_000)
        wav.writeframes(b"".join(sink.lines))
    first, second = (len(line) / 48_000 for line in sink.lines)
    print(f"wrote {out}: {first + second:.2f} s of audio")
    print(f"line 1: {first:.2f} s; line 2: {second:.2f} s, interrupted after its first audio")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "pipecat_agent.wav"))
