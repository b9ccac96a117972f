"""``--dry-run``: audio hours and generation time estimated from the text alone, before any is spent.

Orpheus speaks about 14 characters a second (English, the reference voices;
measure your own with a real run's manifest: characters over ``duration_s``)
and writes 7 tokens per 2048-sample frame at 24 kHz: about 82 tokens per
second of audio. Generation time is tokens over the engine's throughput
(``tokens_per_s``: all sequences together, one engine; measure it, e.g. with
``bench/engine.py``), spread over ``engines``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...local.tokens import FRAME_SAMPLES, TOKENS_PER_FRAME
from .rows import InputRow

__all__ = ["CHARS_PER_AUDIO_S", "TOKENS_PER_AUDIO_S", "Estimate", "estimate"]

CHARS_PER_AUDIO_S = 14.0
TOKENS_PER_AUDIO_S = TOKENS_PER_FRAME * 24000 / FRAME_SAMPLES  # 82.03


@dataclass(frozen=True, slots=True)
class Estimate:
    rows: int
    bad_rows: int
    skipped_rows: int
    characters: int
    audio_s: float
    tokens: int
    generation_s: float  # wall time with ``engines`` engines at ``tokens_per_s`` each

    def render(self) -> str:
        return (
            f"{self.rows} rows to synthesize ({self.skipped_rows} already done, {self.bad_rows} bad), "
            f"{self.characters} characters -> about {self.audio_s / 3600:.2f} h of audio, "
            f"{self.tokens} audio tokens, about {self.generation_s / 3600:.2f} h of generation"
        )


def estimate(
    rows: Sequence[InputRow],
    *,
    done: set[str] = frozenset(),  # type: ignore[assignment]
    tokens_per_s: float,
    engines: int = 1,
    chars_per_audio_s: float = CHARS_PER_AUDIO_S,
) -> Estimate:
    """What synthesizing the good rows of ``rows`` not in ``done`` should produce and cost."""
    todo = [r for r in rows if not r.error and r.id not in done]
    characters = sum(len(r.text) for r in todo)
    audio_s = characters / chars_per_audio_s
    tokens = round(audio_s * TOKENS_PER_AUDIO_S)
    return Estimate(
        rows=len(todo),
        bad_rows=sum(1 for r in rows if r.error),
        skipped_rows=sum(1 for r in rows if not r.error and r.id in done),
        characters=characters,
        audio_s=audio_s,
        tokens=tokens,
        generation_s=tokens / (tokens_per_s * max(engines, 1)),
    )
