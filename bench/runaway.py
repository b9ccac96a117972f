"""The runaway guard: how fast it cuts a loop, what it costs per frame, and how often
normal speech sets it off.

- detection latency: normal (random) frames, then a loop of an N-frame cycle; the
  audio seconds from the loop's start to the cut;
- CPU per frame: feeding frames that never loop (the worst case: every cycle length
  is compared for every frame);
- false positives: espeak-ng's real speech for many texts, encoded to SNAC frames by a
  random-init SNAC 24 kHz (the real codec's weights are not available here, so this
  measures the mechanics on real speech timing, not Orpheus' own codes).

    python bench/runaway.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Not bench/ itself: bench/snac.py would stand in for the snac package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny SNAC's config lives with the tests

from orpheus_trio.local.runaway import FRAME_S, RunawayGuard, RunawayLimits, audio_budget_s  # noqa: E402

TEXTS = [
    "Hi.",
    "Yes.",
    "Hello there, how are you today?",
    "Wait... what? No, no, no!",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "The quick brown fox jumps over the lazy dog.",
    "Dr. Smith arrived at 3.30 p.m.; the meeting, however, had already ended.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, "
    "it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "Ha ha ha! That is the funniest thing I have heard all week.",
    "Please hold. Your call is important to us. Please hold.",
]


def detection_latency(period: int, lead_frames: int = 50) -> float:
    rng = np.random.default_rng(period)
    lead = rng.integers(0, 4096, size=(lead_frames, 7), dtype=np.int64)
    base = rng.integers(0, 4096, size=(period, 7), dtype=np.int64)
    loop = np.concatenate([base] * (2000 // period + 1))
    guard = RunawayGuard()
    assert guard.feed(lead) is None
    for i in range(len(loop)):
        if guard.feed(loop[i : i + 1]) is not None:
            return (guard.frames - lead_frames) * FRAME_S
    raise AssertionError(f"no cut for a {period}-frame cycle")


def cpu_per_frame_us(frames: int) -> float:
    data = np.random.default_rng(0).integers(0, 4096, size=(frames, 7), dtype=np.int64)
    guard = RunawayGuard()
    start = time.process_time()
    for i in range(0, frames, 7):  # in reads of a frame or so, as the synthesizer feeds it
        guard.feed(data[i : i + 7])
    return (time.process_time() - start) / frames * 1e6


def false_positives(texts: list[str]) -> tuple[int, int, float]:
    import torch
    import trio
    from _support_snac import SNAC_24KHZ_CONFIG
    from snac import SNAC

    from orpheus_trio.server.engines.espeak import EspeakEngine

    torch.manual_seed(0)
    model = SNAC(**SNAC_24KHZ_CONFIG).eval()
    engine = EspeakEngine()

    async def speak(text: str) -> bytes:
        return b"".join([p async for p in engine.synthesize(text, None, engine.validate(None, {}))])

    fired = 0
    seconds = 0.0
    for text in texts:
        pcm = trio.run(speak, text)
        audio = torch.from_numpy(np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768)
        audio = torch.nn.functional.pad(audio[None, None], (0, (-len(audio)) % 4096))
        with torch.inference_mode():
            l0, l1, l2 = (codes[0].numpy() for codes in model.encode(audio))
        frames = np.stack([l0, l1[0::2], l2[0::4], l2[1::4], l1[1::2], l2[2::4], l2[3::4]], axis=1)
        guard = RunawayGuard(RunawayLimits(budget_s=audio_budget_s(text)))
        fired += guard.feed(frames.astype(np.int64)) is not None
        seconds += len(frames) * FRAME_S
    return fired, len(texts), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer texts and frames (under 30 s)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    periods = [1, 2, 4, 8, 16]
    latency = {period: detection_latency(period) for period in periods}
    cpu = cpu_per_frame_us(2_000 if args.quick else 20_000)
    texts = TEXTS[:4] if args.quick else TEXTS + [t + " " + t for t in TEXTS]
    fired, utterances, audio_s = false_positives(texts)

    print("runaway guard (defaults: loop = an exact cycle of <= 16 frames covering 3 s, 3 times round)")
    print(f"{'cycle (frames)':>15} {'cycle (s)':>10} {'cut after (audio s)':>20}")
    for period, seconds in latency.items():
        print(f"{period:>15} {period * FRAME_S:>10.2f} {seconds:>20.2f}")
    print(f"CPU per frame fed: {cpu:.1f} us ({cpu / (FRAME_S * 1e6) * 100:.3f} % of real time)")
    print(
        f"false positives on espeak speech through a random-init SNAC encoder: "
        f"{fired} of {utterances} utterances ({audio_s:.0f} s of audio)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "detection_latency_s": {str(k): round(v, 3) for k, v in latency.items()},
                    "cpu_per_frame_us": round(cpu, 2),
                    "false_positives": fired,
                    "utterances": utterances,
                    "audio_s": round(audio_s, 1),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
