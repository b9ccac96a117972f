"""The Orpheus batch pipeline on Ray Data: rows -> prompts -> generation -> decode -> files + manifest.

The driver (this module) reads the input, checks each row, skips what the
manifest lists as done, and records bad rows straight away; Ray Data runs the
rest as streaming stages (Ray's progress bars show each stage). Each finished
row comes back to the driver, which appends it to the manifest after its file
is in place, so a run killed at any moment resumes with a rerun.

Generation engines (``BatchConfig.engine``):

``"vllm"`` (the main path)
    ``ray.data.llm``'s vLLM stage: the prompt ids go in as ``tokenized_prompt``;
    ``llm_concurrency`` engines, each on ``vllm_bundle`` resources (one GPU by
    default on a GPU cluster; ``{"CPU": 1}`` for the CPU build).
``"http"``
    an OpenAI-compatible engine already running (a vLLM fleet, llama-server),
    through the engine worker's own HTTP client.
``"transformers"``
    the on-box transformers model in each of ``llm_concurrency`` actors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...local.tokens import OnInvalid
from .manifest import Manifest, ManifestEntry
from .rows import InputRow
from .stages import (
    DecodeStage,
    EngineGeneration,
    OnBoxGeneration,
    PromptStage,
    WriteStage,
    join_pieces,
    vllm_reply,
    vllm_request,
)

__all__ = ["BatchConfig", "BatchSummary", "run_batch"]

#: Tokenizing and writing files are light: they must not hold a core that decode or vLLM needs.
_LIGHT_CPUS = 0.25

Engine = Literal["vllm", "http", "transformers"]


@dataclass(frozen=True)
class BatchConfig:
    """Where the audio goes and what makes it. ``model``: the Orpheus checkpoint (vLLM and
    transformers engines); ``tokenizer``: defaults to ``model``'s (needed with ``http`` too)."""

    out_dir: Path
    snac: str
    engine: Engine = "vllm"
    model: str | None = None
    tokenizer: str | None = None
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    audio_format: str = "flac"
    split: str = "auto"
    on_invalid: OnInvalid = "error"
    #: Generation: engines (vLLM) or actors (transformers) or request batches in flight (http).
    llm_concurrency: int = 1
    llm_batch_size: int = 16
    vllm_engine_kwargs: dict[str, Any] = field(default_factory=dict)
    vllm_bundle: dict[str, float] | None = None
    vllm_env: dict[str, str] = field(default_factory=dict)
    #: Decode: SNAC actors, GPUs per actor (0: CPU), CPUs per actor, utterances per call.
    decode_actors: int = 1
    decode_gpus: float = 0.0
    decode_cpus: float = 1.0
    decode_batch_size: int = 8
    device: str | None = None

    def __post_init__(self) -> None:
        if self.engine == "http" and (self.llm_url is None or self.tokenizer_path is None):
            raise ValueError("engine 'http' needs llm_url and a tokenizer (or model) for the prompt ids")
        if self.engine in ("vllm", "transformers") and self.model is None:
            raise ValueError(f"engine {self.engine!r} needs model (an Orpheus checkpoint)")
        if self.decode_actors < 1 or self.llm_concurrency < 1:
            raise ValueError("decode_actors and llm_concurrency must be >= 1")

    @property
    def tokenizer_path(self) -> str | None:
        return self.tokenizer or self.model


@dataclass(frozen=True, slots=True)
class BatchSummary:
    rows: int
    written: int
    skipped: int
    failed: int
    audio_s: float
    wall_s: float

    @property
    def speed(self) -> float:
        """Audio seconds made per wall-clock second (above 1: faster than real time)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def render(self) -> str:
        return (
            f"{self.rows} rows: {self.written} written, {self.skipped} skipped (done before), "
            f"{self.failed} failed; {self.audio_s / 3600:.3f} h of audio ({self.audio_s:.1f} s) in "
            f"{self.wall_s:.1f} s, {self.speed:.2f}x real time"
        )


def run_batch(
    rows: Sequence[InputRow],
    config: BatchConfig,
    *,
    address: str | None = None,
    on_entry: Callable[[ManifestEntry], None] | None = None,
) -> BatchSummary:
    """Synthesize ``rows`` into ``config.out_dir`` (files + ``manifest.jsonl``).

    Connects to the Ray cluster at ``address`` (``"auto"``, ``ray://...``) or
    starts a local one, unless Ray is already initialised.
    """
    started = time.monotonic()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(config.out_dir)
    done = manifest.done(config.out_dir)
    todo = [r for r in rows if r.id not in done]
    written = failed = 0
    audio_s = 0.0
    with manifest:
        for row in todo:
            if row.error:
                manifest.add(ManifestEntry(row.id, row.text, row.voice, "", 0.0, 24000, 0, row.error))
                failed += 1
        good = [r for r in todo if not r.error]
        if good:
            for result in _dataset(good, config, address).iter_rows():
                entry = ManifestEntry.from_json(dict(result))
                manifest.add(entry)
                if on_entry is not None:
                    on_entry(entry)
                if entry.done:
                    written += 1
                    audio_s += entry.duration_s
                else:
                    failed += 1
    return BatchSummary(
        rows=len(rows),
        written=written,
        skipped=len(rows) - len(todo),
        failed=failed,
        audio_s=audio_s,
        wall_s=time.monotonic() - started,
    )


def _dataset(rows: Sequence[InputRow], config: BatchConfig, address: str | None) -> Any:
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    items = [
        {"id": r.id, "text": r.text, "voice": r.voice, "params": json.dumps(r.params), "error": ""}
        for r in rows
    ]
    ds = ray.data.from_items(items)
    ds = ds.map_batches(
        PromptStage,
        fn_constructor_args=(config.tokenizer_path,),
        fn_constructor_kwargs={"split": config.split},
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=_LIGHT_CPUS,
        batch_size=64,
        batch_format="pandas",
    )
    ds = _generation(ds, config)
    from ...text.split import AUTO_SPLIT_CHARS

    if config.split != "never" and any(len(r.text) > AUTO_SPLIT_CHARS for r in rows):
        # Only a long row has several pieces; without one the stages stream with no regrouping.
        ds = ds.groupby("id").map_groups(join_pieces, batch_format="pandas")
    ds = ds.map_batches(
        DecodeStage,
        fn_constructor_args=(config.snac,),
        fn_constructor_kwargs={"device": config.device, "on_invalid": config.on_invalid},
        compute=ray.data.ActorPoolStrategy(size=config.decode_actors),
        num_cpus=config.decode_cpus,
        num_gpus=config.decode_gpus or None,
        batch_size=config.decode_batch_size,
        batch_format="pandas",
    )
    return ds.map_batches(
        WriteStage,
        fn_constructor_args=(str(config.out_dir.resolve()), config.audio_format),
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=_LIGHT_CPUS,
        batch_size=config.decode_batch_size,
        batch_format="pandas",
    )


def _generation(ds: Any, config: BatchConfig) -> Any:
    import ray.data

    if config.engine == "vllm":
        return _vllm_stage(config)(ds)
    if config.engine == "http":
        assert config.llm_url is not None
        return ds.map_batches(
            EngineGeneration,
            fn_constructor_args=(config.llm_url,),
            fn_constructor_kwargs={"model": config.llm_model, "api_key": config.llm_api_key},
            compute=ray.data.ActorPoolStrategy(size=config.llm_concurrency),
            batch_size=config.llm_batch_size,
            batch_format="pandas",
        )
    return ds.map_batches(
        OnBoxGeneration,
        fn_constructor_args=(config.model,),
        fn_constructor_kwargs={"device": config.device},
        compute=ray.data.ActorPoolStrategy(size=config.llm_concurrency),
        batch_size=config.llm_batch_size,
        batch_format="pandas",
    )


def _vllm_stage(config: BatchConfig) -> Any:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    engine_kwargs = {"enforce_eager": True, **config.vllm_engine_kwargs}
    extra: dict[str, Any] = {}
    if config.vllm_bundle is not None:
        extra["placement_group_config"] = {"bundles": [config.vllm_bundle]}
    if config.vllm_env:
        extra["runtime_env"] = {"env_vars": dict(config.vllm_env)}
    processor_config = vLLMEngineProcessorConfig(
        model_source=str(config.model),
        engine_kwargs=engine_kwargs,
        batch_size=config.llm_batch_size,
        concurrency=config.llm_concurrency,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        # vLLM's Ray metrics need ray.serve inside the engine's actor; the batch has its own summary.
        log_engine_metrics=False,
        **extra,
    )
    light = {"num_cpus": _LIGHT_CPUS}  # Ray's default, a whole CPU each, can starve the engine's stage
    return build_processor(
        processor_config,
        preprocess=vllm_request,
        postprocess=vllm_reply,
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )
