"""``orpheus-trio batch FILE --ray [ADDRESS]`` and ``--dry-run``: the command line of the pipeline."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .estimate import estimate
from .manifest import Manifest
from .pipeline import BatchConfig, run_batch
from .rows import read_rows

__all__ = ["run_ray"]

_EXIT_OK, _EXIT_FAILED, _EXIT_USAGE = 0, 1, 2


def run_ray(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        rows = read_rows(Path(args.file), voice=args.voice)
    except OSError as error:
        print(f"orpheus-trio batch: error: cannot read {args.file}: {error}", file=err)
        return _EXIT_USAGE
    if not rows:
        print(f"orpheus-trio batch: error: {args.file} holds no rows", file=err)
        return _EXIT_USAGE
    if args.dry_run:
        done = Manifest(args.out_dir).done(args.out_dir) if args.out_dir.is_dir() else set()
        guess = estimate(
            rows, done=done, tokens_per_s=args.tokens_per_second, engines=args.llm_concurrency
        )
        print(f"orpheus-trio batch --dry-run: {guess.render()}", file=err)
        return _EXIT_OK
    if args.snac is None:
        print("orpheus-trio batch: error: --ray needs --snac (the SNAC decoder's checkpoint)", file=err)
        return _EXIT_USAGE
    try:
        config = BatchConfig(
            out_dir=args.out_dir,
            snac=args.snac,
            engine="http" if args.llm_url else args.ray_engine,
            model=args.model,
            tokenizer=args.tokenizer,
            llm_url=args.llm_url,
            llm_model=args.llm_model,
            llm_api_key=args.llm_api_key or os.environ.get("ORPHEUS_LLM_API_KEY"),
            audio_format=args.ray_format,
            split=args.split,
            llm_concurrency=args.llm_concurrency,
            decode_actors=args.decode_actors,
            decode_gpus=args.decode_gpus,
            device=args.device,
            vllm_engine_kwargs={"dtype": args.dtype} if args.dtype else {},
        )
    except (TypeError, ValueError) as error:
        print(f"orpheus-trio batch: error: {error}", file=err)
        return _EXIT_USAGE
    address = None if args.ray == "local" else args.ray
    summary = run_batch(rows, config, address=address)
    print(f"orpheus-trio batch: {summary.render()}", file=err)
    failed = [e for e in Manifest(args.out_dir).entries.values() if e.error]
    for entry in failed[:20]:
        print(f"  FAILED {entry.id}: {entry.error}", file=err)
    if len(failed) > 20:
        print(f"  ... {len(failed) - 20} more in {args.out_dir / 'manifest.jsonl'}", file=err)
    return _EXIT_FAILED if summary.failed else _EXIT_OK
