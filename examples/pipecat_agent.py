"""Orpheus as the voice of a Pipecat pipeline: speak two lines to a WAV file, the second cut off.

    pip install 'orpheus-trio[pipecat]'
    python examples/pipecat_agent.py [out.wav]

In a real agent the frames come from an LLM service and the audio goes to a
transport (WebRTC, a phone line); here a small sink collects the audio. The
second line is interrupted after half a second, as a user barging in would:
Pipecat cancels the TTS task and the Orpheus request stops on the server.
"""

from __future__ import annotations

import asyncio
import sys
import wave

from _asyncio_service import service_urls
from pipecat.frames.frames import EndFrame, Frame, InterruptionFrame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from orpheus_trio.integrations.pipecat import OrpheusTTSService


class AudioSink(FrameProcessor):
    """Keeps the TTS audio (a transport would play it)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = bytearray()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio += frame.audio
        await self.push_frame(frame, direction)


async def main(out: str) -> None:
    tts = OrpheusTTSService(url=service_urls()[0], voice="tara", sample_rate=24_000)
    sink = AudioSink()
    worker = PipelineWorker(Pipeline([tts, sink]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    async def speak() -> None:
        await started.wait()
        await worker.queue_frame(TTSSpeakFrame("Hi! I'm your assistant. <chuckle> How can I help?"))
        await asyncio.sleep(3)
        await worker.queue_frame(TTSSpeakFrame("Let me tell you a very long story about trains."))
        await asyncio.sleep(0.5)
        await worker.queue_frame(InterruptionFrame())  # the user starts talking
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), speak())
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24_000)
        wav.writeframes(bytes(sink.audio))
    print(f"wrote {out}: {len(sink.audio) / 48_000:.2f} s of audio")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "pipecat_agent.wav"))
