"""Voice cloning: reference encode speed, and a cloned voice's time to first audio on llama-server.

    python bench/voices.py [--quick] [--json PATH] [--device cpu|cuda] [--streams 1,8]
                           [--reference-s S] [--llama-server PATH]

1. ``encode``: the SNAC 24 kHz encoder (the real architecture, random weights:
   the same compute as ``hubertsiuzdak/snac_24khz``) on a clip of
   ``--reference-s`` seconds, one clip and a batch of 4 (quick: one); wall and
   CPU milliseconds of encode per second of reference audio (the median of 3;
   CPU time says more than wall time on a shared machine).
2. ``ttfa``: time to first audio through :class:`LocalSynthesizer` over
   :class:`RemoteLM` on llama-server, for a stock voice (the short fine-tuned
   prompt) and a cloned voice (two references of ``--reference-s`` seconds
   each, about 82 prompt tokens per second), with the engine's prompt cache
   (``cache_prompt: true``, what the worker sends) and without it, at 1 and 8
   concurrent streams (p50 and p99 over the streams of 3 rounds, after a
   warm-up round that fills the slots' caches). The SNAC decode is replaced by
   one that takes no time, so the figure is the engine's: the prompt's
   evaluation and the first frame's 7 tokens.

The model is a scripted random Llama bigger than the tests' (``--hidden``,
``--layers``) so that evaluating a prompt costs what it costs relative to a
generated token; its figures show the cache's effect, not Orpheus-3B's speed.
The reference codes are random (no repeated frames, as in real speech), not
an encode of the clip: the random SNAC's codes repeat and would be dropped.
Needs ``llama-server`` (``scripts/build-llama-server.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np
import trio

ROOT = Path(__file__).resolve().parent.parent
# bench/snac.py would shadow the snac package: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders live with the tests

from orpheus_trio.local.cloning import cloning_prompt
from orpheus_trio.local.engine_client import RemoteLM
from orpheus_trio.local.llm import END_OF_TEXT
from orpheus_trio.local.snac_decoder import SnacDecoder
from orpheus_trio.local.synthesizer import LocalSynthesizer, TruncatedSpeechWarning
from orpheus_trio.voices.library import CustomVoice, Reference, VoiceLibrary

TEXT = "the quick brown fox , hello world ."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_encode(device: str, seconds: float, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    import snac
    import torch
    from _support_snac import SNAC_24KHZ_CONFIG
    from _support_voices import speechlike

    from orpheus_trio.local.snac_encoder import SnacEncoder

    torch.manual_seed(0)
    encoder = SnacEncoder(snac.SNAC(**SNAC_24KHZ_CONFIG), fingerprint="sha256:bench", device=device)
    clip = speechlike(seconds, 24_000)[:, 0]
    rows = []
    for batch in batches:
        clips = [clip] * batch
        encoder.encode_batch(clips)  # warm-up
        walls, cpus = [], []
        for _ in range(3):
            start, cpu_start = time.perf_counter(), time.process_time()
            encoder.encode_batch(clips)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu_start)
        audio_s = seconds * batch
        rows.append({
            "device": device, "clip_s": seconds, "batch": batch,
            "wall_ms_per_audio_s": statistics.median(walls) * 1000 / audio_s,
            "cpu_ms_per_audio_s": statistics.median(cpus) * 1000 / audio_s,
        })  # fmt: skip
    return rows


class CacheSwitch(RemoteLM):
    """:class:`RemoteLM` whose requests say ``cache_prompt`` as told (the worker always sends true)."""

    cache_prompt = True

    async def _open(self, body: Mapping[str, Any], kind: Any) -> Any:
        return await super()._open({**body, "cache_prompt": self.cache_prompt}, kind)


async def first_audio(synth: LocalSynthesizer, voice: str) -> float:
    async with synth.open_stream(TEXT, voice, temperature=0, max_tokens=7 * 8) as audio:
        await audio.__anext__()
        assert audio.ttfb_s is not None
        return audio.ttfb_s


async def measure(synth: LocalSynthesizer, voice: str, streams: int, rounds: int) -> list[float]:
    results: list[float] = []

    async def one() -> None:
        results.append(await first_audio(synth, voice))

    for round_ in range(rounds + 1):
        if round_ == 1:
            results.clear()  # the first round only warms every slot
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one)
    return results


def save_model(path: Path, hidden: int, layers: int) -> Path:
    """A scripted Llama (loops valid audio frames) of the given size, with the tests' tokenizer."""
    import _support_llm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    config = LlamaConfig(
        vocab_size=_support_llm.VOCAB_SIZE, hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=8192, bos_token_id=_support_llm.BOS_ID, eos_token_id=END_OF_TEXT,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    _support_llm.HIDDEN = hidden  # the steering's direction count
    _support_llm._steer(model, _support_llm.audio_script(8), loop=True)
    model.save_pretrained(path)
    _support_llm.save_tokenizer(path)
    return path


def cloned_voice(snac_fingerprint: str, seconds: float) -> CustomVoice:
    frames = int(seconds * 24_000 / 2048)
    rng = np.random.default_rng(0)
    references = tuple(
        Reference(text, rng.integers(0, 4096, size=(frames, 7)), frames * 2048, 24_000)
        for text in ("hello world , the quick fox .", "the brown fox , hello .")
    )
    return CustomVoice("me", references, snac_fingerprint)


def bench_ttfa(args: argparse.Namespace, streams: list[int], rounds: int) -> list[dict[str, Any]]:
    from _support_engine import llama_server_binary, running_llama_server, write_gguf
    from _support_snac import InstantDecoder, save_random_snac

    from orpheus_trio.local.snac_encoder import snac_fingerprint_of

    if args.llama_server:
        os.environ["ORPHEUS_TRIO_LLAMA_SERVER"] = args.llama_server
    binary = llama_server_binary()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-voices-") as scratch:
        root = Path(scratch)
        model = save_model(root / "llm", args.hidden, args.layers)
        snac_path = save_random_snac(root / "snac")[1]
        gguf = write_gguf(model, root / "model.gguf")
        library = VoiceLibrary(root / "voices", snac=snac_fingerprint_of(snac_path))
        voice = cloned_voice(library.snac or "", args.reference_s)
        library.add(voice)
        # No decode cost: time to first audio is then the engine's (prompt + first frame's tokens).
        decoder = InstantDecoder(SnacDecoder.from_pretrained(snac_path))
        counting = RemoteLM("http://127.0.0.1:9", tokenizer=model)
        prompt_tokens = len(cloning_prompt(counting, TEXT, voice))
        stock_tokens = len(counting.prompt_ids(TEXT, "tara"))
        ctx = prompt_tokens + 7 * 8 + 256
        with running_llama_server(gguf, slots=max(streams), ctx_per_slot=ctx, threads=args.engine_threads, binary=binary) as engine:
            for cache in (True, False):
                lm = CacheSwitch(engine.url, tokenizer=model, read_timeout_s=600)
                lm.cache_prompt = cache
                synth = LocalSynthesizer(lm, decoder, voice_library=library, can_clone=True)  # type: ignore[arg-type]
                for n in streams:
                    for kind, name in (("stock", "tara"), ("cloned", "me")):
                        if kind == "stock" and not cache:
                            continue  # a stock prompt is a few tokens: nothing to cache
                        ttfa = trio.run(measure, synth, name, n, rounds)
                        rows.append({
                            "voice": kind, "prompt_cache": cache if kind == "cloned" else None, "streams": n,
                            "prompt_tokens": prompt_tokens if kind == "cloned" else stock_tokens,
                            "ttfa_p50_ms": percentile(ttfa, 0.5) * 1000, "ttfa_p99_ms": percentile(ttfa, 0.99) * 1000,
                        })  # fmt: skip
                trio.run(lm.aclose)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short budgets (< 30 s in all, once built)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--device", default="cpu", help="the encoder's torch device (default cpu)")
    parser.add_argument("--streams", default="1,8")
    parser.add_argument("--reference-s", type=float, help="seconds per reference (default 10; quick 5)")
    parser.add_argument("--hidden", type=int, help="default 256; quick 128")
    parser.add_argument("--layers", type=int, help="default 4; quick 2")
    parser.add_argument("--engine-threads", type=int, default=2)
    parser.add_argument("--llama-server", metavar="PATH")
    parser.add_argument("--skip-ttfa", action="store_true", help="only the encoder (no llama-server)")
    args = parser.parse_args()
    args.reference_s = args.reference_s or (5.0 if args.quick else 10.0)
    args.layers = args.layers or (2 if args.quick else 4)
    args.hidden = args.hidden or (128 if args.quick else 256)
    rounds = 1 if args.quick else 3
    streams = [int(s) for s in args.streams.split(",")]
    warnings.simplefilter("ignore", TruncatedSpeechWarning)  # first audio only: cut on purpose

    import torch

    encode = bench_encode(args.device, args.reference_s, (1,) if args.quick else (1, 4))
    print(f"encoder: {args.device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    print(f"{'clip s':>7}{'batch':>7}{'wall ms/audio s':>17}{'cpu ms/audio s':>16}")
    for r in encode:
        print(f"{r['clip_s']:>7.1f}{r['batch']:>7}{r['wall_ms_per_audio_s']:>17.1f}{r['cpu_ms_per_audio_s']:>16.1f}")
    ttfa: list[dict[str, Any]] = []
    if not args.skip_ttfa:
        ttfa = bench_ttfa(args, streams, rounds)
        print(f"\nllama-server, scripted Llama hidden {args.hidden} x {args.layers} layers, "
              f"{args.engine_threads} threads; 2 references of {args.reference_s:g} s")  # fmt: skip
        print(f"{'voice':<8}{'cache':>7}{'streams':>9}{'prompt':>8}{'ttfa p50':>11}{'ttfa p99':>11}")
        for r in ttfa:
            cache = "-" if r["prompt_cache"] is None else ("on" if r["prompt_cache"] else "off")
            print(f"{r['voice']:<8}{cache:>7}{r['streams']:>9}{r['prompt_tokens']:>8}"
                  f"{r['ttfa_p50_ms']:>9.1f}ms{r['ttfa_p99_ms']:>9.1f}ms")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"encode": encode, "ttfa": ttfa, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
