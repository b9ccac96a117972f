"""Text arriving piece by piece (as an LLM writes it) cut into sentences to synthesize: sans-IO.

Feed it text with the time it arrived; it hands back pieces ready to speak.
The sentence rules are ``text.split``'s (abbreviations, initials, closing
quotes, paragraph breaks), and so is the packing of pieces; what this adds is
the timing:

- a sentence is ready once the text after it has begun (a period followed by
  a lowercase word, as in "3 p.m. and", does not end one, so the next word is
  awaited), or at a paragraph break, or when the text ends; text that ends
  like a sentence is ready anyway if nothing follows within ``end_wait_s``
  (the LLM paused there);
- a long clause starts early: once the oldest unspoken text has waited
  ``max_wait_s`` for its sentence to end, the text is cut at the last clause
  mark, else between words, provided the part cut off has at least
  ``min_chars`` characters (a few words alone would sound clipped).
- no piece is longer than ``max_chars``: a sentence that runs past it is cut
  at once (clause marks, then words, then between grapheme clusters: never
  inside a cluster or an inline tag).

Every script ``text.split`` handles is handled here the same way: Mandarin
``。`` ends a sentence with no space after it, ``，`` a clause; a word cut never
strands French ``!`` or a ``¿`` opener.

The caller sleeps until :attr:`SentenceChunker.deadline` (or new text) and
calls :meth:`~SentenceChunker.poll`; all times come from the caller's clock.
"""

from __future__ import annotations

import math

from .split import (
    DEFAULT_MAX_CHARS,
    clause_ends,
    grapheme_cut,
    paragraph_ends,
    sentence_ends,
    split_text,
    word_breaks,
)

__all__ = ["DEFAULT_END_WAIT_S", "DEFAULT_MAX_WAIT_S", "DEFAULT_MIN_CHARS", "SentenceChunker"]

#: At 30 tokens/s an LLM writes a typical sentence in well under a second.
DEFAULT_MAX_WAIT_S = 1.0
DEFAULT_MIN_CHARS = 40
#: About three tokens at 30 tokens/s: the next word usually comes well within it.
DEFAULT_END_WAIT_S = 0.1


class SentenceChunker:
    """Sentences out of streamed text, as soon as each is complete (see the module docstring)."""

    def __init__(
        self,
        *,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        min_chars: int = DEFAULT_MIN_CHARS,
        max_chars: int = DEFAULT_MAX_CHARS,
        end_wait_s: float = DEFAULT_END_WAIT_S,
    ) -> None:
        for name, value in (("max_wait_s", max_wait_s), ("end_wait_s", end_wait_s)):
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"{name} must be >= 0 (math.inf: never), got {value}")
        if min_chars < 1:
            raise ValueError(f"min_chars must be >= 1, got {min_chars}")
        if max_chars < min_chars:
            raise ValueError(f"max_chars ({max_chars}) must be >= min_chars ({min_chars})")
        self.max_wait_s = max_wait_s
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.end_wait_s = end_wait_s
        self._buffer = ""
        self._last_text_at = 0.0  # when the buffer's end last changed
        self._waiting_since: float | None = None  # when the oldest unspoken text began to wait
        self._finished = False

    @property
    def pending(self) -> str:
        """The text received but not yet handed out."""
        return self._buffer

    @property
    def deadline(self) -> float | None:
        """When :meth:`poll` will cut early if no more text comes; ``None``: only new text helps."""
        deadlines = []
        if self._looks_finished(self._buffer):
            deadlines.append(self._last_text_at + self.end_wait_s)
        if self._waiting_since is not None and self._early_cut(self._buffer) is not None:
            deadlines.append(self._waiting_since + self.max_wait_s)
        soonest = min(deadlines, default=math.inf)
        return None if math.isinf(soonest) else soonest

    def feed(self, text: str, now: float) -> list[str]:
        """Add ``text`` (which arrived at ``now``); the pieces now ready, in order."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if not isinstance(text, str):
            raise TypeError(f"text pieces must be str, got {type(text).__name__}")
        self._buffer += text
        self._last_text_at = now
        if self._waiting_since is None and self._buffer.strip():
            self._waiting_since = now
        return self._cut(now, final=False)

    def poll(self, now: float) -> list[str]:
        """The pieces ready at ``now`` with no new text (the max-wait rule)."""
        return self._cut(now, final=False)

    def finish(self, now: float) -> list[str]:
        """The text has ended: everything left, as pieces."""
        self._finished = True
        return self._cut(now, final=True)

    def _cut(self, now: float, *, final: bool) -> list[str]:
        pieces: list[str] = []
        while self._buffer.strip():
            text = self._buffer
            end = self._complete_end(text)
            if end is None and final:
                end = len(text)
            if end is None and len(text) > self.max_chars:
                end = self._overflow_cut(text)
            if (
                end is None
                and self._looks_finished(text)
                and now - self._last_text_at >= self.end_wait_s
            ):
                end = len(text)
            if (
                end is None
                and self._waiting_since is not None
                and now - self._waiting_since >= self.max_wait_s
            ):
                end = self._early_cut(text)
            if end is None:
                break
            pieces.extend(split_text(text[:end], max_chars=self.max_chars))
            self._buffer = text[end:].lstrip()
            # What is left starts its own wait now: the piece just cut will take a while to speak.
            self._waiting_since = now if self._buffer.strip() else None
        if not self._buffer.strip():
            self._waiting_since = None
        return pieces

    @staticmethod
    def _complete_end(text: str) -> int | None:
        """Just past the last sentence already followed by more text, or the last paragraph break."""
        ends = [e for e in sentence_ends(text) if text[e:].strip()]
        ends += [p for p in paragraph_ends(text) if text[:p].strip()]
        return max(ends, default=None)

    def _overflow_cut(self, text: str) -> int:
        """Where to cut a sentence running past ``max_chars``: its last clause, else word, that fits."""
        fits = [e for e in clause_ends(text) if e <= self.max_chars]
        fits = fits or [i for i in word_breaks(text + ".") if i <= self.max_chars]
        return max(fits, default=None) or grapheme_cut(text, self.max_chars)

    @staticmethod
    def _looks_finished(text: str) -> bool:
        """Ends like a sentence, only nothing has followed it yet."""
        stripped = text.rstrip()
        return bool(stripped) and len(stripped) in sentence_ends(stripped + " ")

    def _early_cut(self, text: str) -> int | None:
        """Where the max-wait rule may cut ``text``, if anywhere."""
        if self._looks_finished(text):
            return len(text)
        stripped = text.rstrip()
        for candidates in (
            clause_ends(stripped + " "),  # a clause mark with nothing after it yet counts too
            word_breaks(text + "."),  # the words before a space are complete
        ):
            long_enough = [e for e in candidates if len(text[:e].strip()) >= self.min_chars]
            if long_enough:
                return max(long_enough)
        return None
