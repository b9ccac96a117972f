"""Voice-agent benchmark: an LLM's reply spoken as it is written, through ``stream_text``.

A simulated LLM writes each reply at 30 tokens/s (a token is a word and its
space). For each reply the bench records when the LLM finished the first
sentence (its full stop was written) and when the first audio came back:
that gap is what a user waits for after the agent "knows" what to say. Audio
is then played on a virtual clock from the moment the first chunk arrives;
an underrun is a chunk that arrives after the audio before it has run out.
Engines: espeak (real speech, fast) and synthetic paced like a neural model
(100 ms to first chunk, 0.5 x real time), each in its own server process.

Joins: the replies cut into pieces of at most 60 characters (about a sentence each), each synthesized on its own (espeak), the
pieces butted together ("before") and through :class:`JoinSmoother` ("after",
what ``stream``/``stream_text`` play); :func:`join_discontinuities` gives each
join's step over the signal's own steps (around 1 or less: seamless).

    .venv/bin/python bench/agent.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from orpheus_trio import OrpheusTTS
from orpheus_trio.text.split import split_text

sys.path.insert(0, str(Path(__file__).parent))
from longform import join_ratios  # noqa: E402  (bench/longform.py)
from server import ServerProcess  # noqa: E402  (bench/server.py)

TOKENS_PER_S = 30.0
BYTES_PER_S = 24_000 * 2
REPLIES = [
    "Sure, I can help with that. The train leaves at nine fifteen from platform two. "
    "It takes about forty minutes to reach the city centre.",
    "Good question. Most people find the first week the hardest, but it gets easier. "
    "Try to keep the same bedtime every night.",
    "I checked the order for you. It shipped yesterday and should arrive on Friday. "
    "You will get a text message when it is out for delivery.",
    "That sounds frustrating. Let us try restarting the router first. "
    "Unplug it, wait ten seconds, and plug it back in.",
]
ENGINES: dict[str, dict[str, Any]] = {
    "espeak": {},
    "synthetic": {"ttfb_ms": 100, "rtf": 0.5, "chunk_samples": 2400},
}


async def llm(text: str, marks: dict[str, float]) -> AsyncIterator[str]:
    """``text`` a word at a time at TOKENS_PER_S; marks when the first sentence is complete."""
    words = text.split(" ")
    for i, word in enumerate(words):
        await trio.sleep(1 / TOKENS_PER_S)
        yield word if i == len(words) - 1 else word + " "
        if "first_sentence" not in marks and word.endswith((".", "!", "?")):
            marks["first_sentence"] = trio.current_time()


async def one_reply(tts: OrpheusTTS, text: str, params: dict[str, Any]) -> dict[str, float]:
    marks: dict[str, float] = {}
    first_audio: float | None = None
    played_until = 0.0  # virtual playback clock: when the audio received so far runs out
    underruns, stalled_s, audio_s = 0, 0.0, 0.0
    async for chunk in tts.stream_text(llm(text, marks), **params):
        now = trio.current_time()
        duration = len(chunk) / BYTES_PER_S
        if first_audio is None:
            first_audio, played_until = now, now
        elif now > played_until:
            underruns += 1
            stalled_s += now - played_until
            played_until = now
        played_until += duration
        audio_s += duration
    assert first_audio is not None, "no audio"
    return {
        "first_audio_s": first_audio - marks["first_sentence"],
        "underruns": underruns,
        "stalled_s": stalled_s,
        "audio_s": audio_s,
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def engine_runs(url: str, params: dict[str, Any], replies: int) -> dict[str, Any]:
    runs = []
    async with OrpheusTTS(url) as tts:
        await one_reply(tts, REPLIES[0], params)  # warm up: connection, engine
        for i in range(replies):
            runs.append(await one_reply(tts, REPLIES[i % len(REPLIES)], params))
    latencies = [r["first_audio_s"] for r in runs]
    return {
        "replies": replies,
        "first_audio_p50_ms": round(1000 * statistics.median(latencies), 1),
        "first_audio_p99_ms": round(1000 * pct(latencies, 99), 1),
        "underruns": sum(int(r["underruns"]) for r in runs),
        "stalled_ms": round(1000 * sum(r["stalled_s"] for r in runs), 1),
        "audio_s": round(sum(r["audio_s"] for r in runs), 1),
    }


async def joins(url: str) -> dict[str, Any]:
    """Each sentence alone, then the pieces butted and smoothed: each join's step ratio."""
    sentences = [s for reply in REPLIES for s in split_text(reply, max_chars=60)]
    pieces: list[bytes] = []
    async with OrpheusTTS(url) as tts:
        for sentence in sentences:
            pieces.append(b"".join([c async for c in tts.stream(sentence, split="never")]))
    return join_ratios(pieces)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few replies (under 30 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args()
    replies = 4 if args.quick else 24
    results: dict[str, Any] = {"tokens_per_s": TOKENS_PER_S, "engines": {}}
    engines = dict(ENGINES)
    if importlib.util.find_spec("espeakng_loader") is None:  # the espeak engine's library
        print("espeakng_loader not installed: espeak rows skipped", file=sys.stderr)
        engines.pop("espeak")
    for engine, params in engines.items():
        server = ServerProcess(engine)
        try:
            url = f"http://{server.host}:{server.port}"
            results["engines"][engine] = trio.run(engine_runs, url, params, replies)
            if engine == "espeak":
                results["joins_espeak"] = trio.run(joins, url)
        finally:
            server.stop()

    print(f"stream_text, simulated LLM at {TOKENS_PER_S:g} tokens/s, {replies} replies per engine")
    print(f"{'engine':<10} {'1st sentence->audio p50':>24} {'p99':>9} {'underruns':>10} "
          f"{'stalled':>9} {'audio':>8}")  # fmt: skip
    for engine, r in results["engines"].items():
        print(
            f"{engine:<10} {r['first_audio_p50_ms']:>21.1f} ms {r['first_audio_p99_ms']:>6.1f} ms "
            f"{r['underruns']:>10} {r['stalled_ms']:>6.1f} ms {r['audio_s']:>6.1f} s"
        )
    if j := results.get("joins_espeak"):
        print(
            f"\nespeak joins ({j['joins']}), step / the signal's own: butted median "
            f"{j['before_median']} max {j['before_max']}; faded median {j['after_median']} "
            f"max {j['after_max']}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
