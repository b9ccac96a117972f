"""On-box synthesis (``OrpheusTTS.local``) on both event loops: asyncio and Trio.

test_local_synth.py checks the pipeline in depth under Trio; here the same
API on each loop: the audio, cancellation stopping the model's thread, and
the deadline.
"""

from __future__ import annotations

import threading
from functools import cache

import anyio
import pytest
from _support_llm import CountingLM, counting_lm, scripted_model_dir, snac_dir
from orpheus_trio.client import OrpheusTTS
from orpheus_trio.errors import DeadlineExceeded
from orpheus_trio.local.synthesizer import LocalSynthesizer
from orpheus_trio.local.tokens import FRAME_SAMPLES

#: The endless model tests deadlines and cancellation: the runaway guard would end it first.
NO_GUARD = {"runaway": "off"}

pytestmark = pytest.mark.anyio
FRAMES = 6


@cache
def looping() -> LocalSynthesizer:
    return LocalSynthesizer.load(
        scripted_model_dir(2, loop=True), snac_dir(), device="cpu", defaults=NO_GUARD
    )


def llm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "orpheus-llm"]


async def test_local_client_api_on_each_loop() -> None:
    async with OrpheusTTS.local(scripted_model_dir(FRAMES), snac_dir(), device="cpu") as tts:
        streamed = b"".join([pcm async for pcm in tts.stream("hello", voice="tara")])
        async with tts.open_stream("hello") as audio:
            opened = b"".join([pcm async for pcm in audio])
        whole = await tts.synthesize("hello")
    assert streamed == opened == whole
    assert len(whole) == FRAMES * FRAME_SAMPLES * 2 and any(whole)
    assert audio.finish_reason == "stop"


async def test_cancelling_stops_generation_on_each_loop() -> None:
    lm = counting_lm(looping().lm, CountingLM)
    synth = LocalSynthesizer(lm, looping().snac, defaults=NO_GUARD)
    received = 0
    with anyio.CancelScope() as scope:
        async with synth.open_stream("hello", max_tokens=4000) as audio:
            async for _ in audio:
                received += 1
                if received == 2:
                    scope.cancel()  # mid-stream, whatever the machine's speed
    assert scope.cancelled_caught and received == 2
    assert audio.finish_reason == "cancelled"
    with anyio.fail_after(5):
        while llm_threads():
            await anyio.sleep(0.02)
    produced = lm.produced
    await anyio.sleep(0.1)
    assert lm.produced == produced and lm.running == 0


async def test_local_deadline_is_a_timeout_error_on_each_loop() -> None:
    chunks = 0
    with pytest.raises(DeadlineExceeded) as info:
        # Long enough for audio on a loaded machine; the model never stops by itself.
        async for _ in looping().stream("hello", timeout_s=3, max_tokens=4000):
            chunks += 1
    assert chunks > 0 and isinstance(info.value, TimeoutError)
