"""The runaway guard: end a piece whose speech loops or runs far past what its text needs.

Orpheus sometimes never says "end of speech": it repeats a sound, or a short
cycle of frames, or babbles on long after the text is spoken (users report
minutes of looped or stretched audio). Three bounds, each sans-IO and cheap
(a few tuple comparisons per 85 ms frame):

- :func:`audio_budget_s` / :func:`derived_max_tokens`: how much audio a text can
  need, from generous per-script speaking rates; when the caller gives no
  ``max_tokens``, the request's own is derived from it.
- :class:`RunawayGuard` watches the decoded SNAC frames: the same frame, or a
  short cycle of frames, repeating exactly for ``loop_s`` of audio is a loop
  (``"loop"``); audio past the text's budget is ``"too_long"``.

Exact repeats only: sampling noise makes a phrase-level repeat differ in its
fine codes, and a tolerant match would also fire on a slow drift of held
sounds; such long babble is caught by the audio budget instead.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from .tokens import TOKENS_PER_FRAME

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "FRAME_S",
    "RUNAWAY_MODES",
    "RunawayGuard",
    "RunawayLimits",
    "RunawayMode",
    "RunawayReason",
    "audio_budget_s",
    "checked_mode",
    "derived_max_tokens",
]

#: One SNAC 24 kHz coarse frame: 512 samples x 4 (the coarsest codebook's stride) / 24 kHz.
FRAME_S = 2048 / 24_000
#: Real time: 11.72 frames per second, 7 tokens each.
AUDIO_TOKENS_PER_SECOND = TOKENS_PER_FRAME / FRAME_S

#: Why a piece was ended early: the frames repeat, or the audio outran the text.
RunawayReason = Literal["loop", "too_long"]
#: ``"warn"`` (default): end the piece, say so in-band, the client warns;
#: ``"error"``: end it with an in-band error; ``"off"``: no guard (``max_tokens`` only).
RunawayMode = Literal["warn", "error", "off"]
RUNAWAY_MODES: tuple[RunawayMode, ...] = ("warn", "error", "off")


def checked_mode(value: object) -> RunawayMode:
    """``value`` as a :data:`RunawayMode`, or ``ValueError`` saying what is allowed."""
    for mode in RUNAWAY_MODES:
        if value == mode and isinstance(value, str):
            return mode
    raise ValueError(f"must be one of {', '.join(map(repr, RUNAWAY_MODES))}, got {value!r}")

# Seconds of speech one character may need, at the slow end of careful reading
# (about a third of the usual rate). Usual rates: English and other alphabetic
# scripts 12-16 characters/s (150-180 words/min), Korean 6-8 syllable blocks/s,
# Mandarin 4-6 characters/s; Hindi in Devanagari about 12 characters/s.
_ALPHABETIC_S = 0.25
_HANGUL_S = 0.45
_HAN_KANA_S = 0.6
#: An emotion tag (``<laugh>``, ``<한숨>``) is a sound of its own, not its letters.
_TAG_S = 2.0
#: Every text may take this long (a word said slowly, a pause, a breath).
_FLOOR_S = 4.0
_TAG = re.compile(r"<[^<>\s]{1,32}>")


def audio_budget_s(text: str) -> float:
    """The most audio ``text`` can reasonably need, in seconds (generous by design)."""
    tags = len(_TAG.findall(text))
    seconds = _FLOOR_S + tags * _TAG_S
    for char in _TAG.sub(" ", text):
        if not char.isalnum():
            continue  # spaces, punctuation, marks: the per-character rates include them
        code = ord(char)
        if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF:
            seconds += _HANGUL_S
        elif (
            0x4E00 <= code <= 0x9FFF
            or 0x3400 <= code <= 0x4DBF
            or 0x3040 <= code <= 0x30FF
            or 0xF900 <= code <= 0xFAFF
        ):
            seconds += _HAN_KANA_S
        else:
            seconds += _ALPHABETIC_S
    return seconds


def derived_max_tokens(text: str, *, ceiling: int) -> int:
    """``max_tokens`` for ``text`` when the caller gives none: its audio budget in
    whole frames of tokens, at most ``ceiling`` (the engine's own default)."""
    frames = math.ceil(audio_budget_s(text) / FRAME_S)
    return max(TOKENS_PER_FRAME, min(ceiling, frames * TOKENS_PER_FRAME))


@dataclass(frozen=True, slots=True)
class RunawayLimits:
    """The guard's thresholds.

    ``loop_s``: how much audio an exact repeat must cover before it is a loop
    (a held vowel or a pause repeats its frame only briefly; two seconds of
    identical frames is never speech, three is a wide margin). ``max_cycle_frames``: the longest cycle
    looked for (16 frames, 1.4 s). ``min_cycles``: a cycle must come round this
    many times. ``budget_s``: audio past this is too long (``None``: no bound).
    """

    loop_s: float = 3.0
    max_cycle_frames: int = 16
    min_cycles: int = 3
    budget_s: float | None = None

    def __post_init__(self) -> None:
        if not self.loop_s > 0 or not 1 <= self.max_cycle_frames <= 256 or self.min_cycles < 2:
            raise ValueError(f"bad runaway limits: {self!r}")


class RunawayGuard:
    """Watches one piece's frames; :attr:`reason` is set once it runs away.

    For every cycle length ``p`` it counts how many frames in a row equal the
    frame ``p`` before them; a pure cycle of length ``p`` sustained for ``n``
    frames makes that count ``n - p``. O(``max_cycle_frames``) per frame.
    """

    __slots__ = ("_history", "_limits", "_loop_frames", "_runs", "frames", "reason")

    def __init__(self, limits: RunawayLimits = RunawayLimits()) -> None:
        self._limits = limits
        self._history: deque[tuple[int, ...]] = deque(maxlen=limits.max_cycle_frames)
        self._runs = [0] * (limits.max_cycle_frames + 1)
        self._loop_frames = math.ceil(limits.loop_s / FRAME_S)
        self.frames = 0
        self.reason: RunawayReason | None = None

    @property
    def audio_s(self) -> float:
        return self.frames * FRAME_S

    def feed(self, frames: npt.NDArray[np.int64]) -> RunawayReason | None:
        """Take ``(n, 7)`` code frames, in order; the reason once it runs away.

        Frames after the verdict are not looked at: the caller stops there.
        """
        limits, history, runs = self._limits, self._history, self._runs
        for row in frames.tolist():
            if self.reason is not None:
                break
            codes = tuple(row)
            self.frames += 1
            for period in range(1, len(history) + 1):
                if history[-period] == codes:
                    runs[period] += 1
                    repeated = runs[period] + period  # frames the cycle has covered
                    if (
                        repeated >= self._loop_frames
                        and repeated >= limits.min_cycles * period
                    ):
                        self.reason = "loop"
                else:
                    runs[period] = 0
            history.append(codes)
            if (
                self.reason is None
                and limits.budget_s is not None
                and self.audio_s > limits.budget_s
            ):
                self.reason = "too_long"
        return self.reason
