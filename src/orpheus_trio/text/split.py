"""Splitting long text into pieces a TTS engine handles well: paragraphs, then sentences.

Orpheus-style engines generate a bounded number of audio tokens per request and
drift on very long inputs, so long text is sent as pieces of at most
``max_chars`` characters. Pieces never cross a paragraph break; sentences are
packed together up to the limit; a sentence longer than the limit is cut at
clause punctuation, then between words, and only as a last resort inside a word.
Whitespace is normalised; no other character is added, dropped or reordered.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "AUTO_SPLIT_CHARS",
    "DEFAULT_MAX_CHARS",
    "SPLIT_MODES",
    "SplitMode",
    "clause_ends",
    "paragraph_ends",
    "sentence_ends",
    "split_for_synthesis",
    "split_text",
]

#: ``auto`` splits text longer than this; ``sentences`` always splits; ``never`` sends it whole.
SplitMode = Literal["auto", "never", "sentences"]
SPLIT_MODES: tuple[SplitMode, ...] = ("auto", "never", "sentences")
AUTO_SPLIT_CHARS = 400
DEFAULT_MAX_CHARS = 300

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# A sentence ends at . ! ? or an ellipsis, plus closing quotes/brackets, before whitespace.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\)\]\u201d\u2019\u00bb]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:\u2014\u2013](?=\s)")
# Abbreviations after which a period rarely ends a sentence.
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "no",
        "fig",
        "approx",
        "dept",
        "est",
        "inc",
        "ltd",
        "co",
        "mt",
    ]
)


def split_for_synthesis(
    text: str,
    mode: SplitMode = "auto",
    *,
    auto_threshold: int = AUTO_SPLIT_CHARS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> list[str]:
    """The pieces to synthesize ``text`` as, according to ``mode``: always at least one.

    Blank text comes back whole, so the request that follows rejects it with its own clear error.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_MODES)}; got {mode!r}")
    if mode == "never" or (mode == "auto" and len(text) <= auto_threshold):
        return [text]
    return split_text(text, max_chars=max_chars) or [text]


def split_text(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Pieces of at most ``max_chars`` characters, in order, never empty."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    pieces: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = " ".join(paragraph.split())
        if paragraph:
            pieces.extend(_pack(_sentences(paragraph), max_chars))
    return pieces


def sentence_ends(text: str) -> list[int]:
    """Offsets just past each sentence end in ``text`` (its punctuation and closing quotes).

    An end needs whitespace after it; whether the next word is lowercase (a
    continuation, as in "e.g. the") is judged on what text follows, so an end
    followed by nothing yet counts.
    """
    return [m.end() for m in _SENTENCE_END.finditer(text) if _is_sentence_end(text, m)]


def paragraph_ends(text: str) -> list[int]:
    """Offsets where each paragraph break (a blank line) begins."""
    return [m.start() for m in _PARAGRAPH_BREAK.finditer(text)]


def clause_ends(text: str) -> list[int]:
    """Offsets just past each clause mark (, ; : and dashes) that has whitespace after it."""
    return [m.end() for m in _CLAUSE_END.finditer(text)]


def _sentences(paragraph: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for end in sentence_ends(paragraph):
        sentences.append(paragraph[start:end].strip())
        start = end
    rest = paragraph[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def _is_sentence_end(paragraph: str, match: re.Match[str]) -> bool:
    following = paragraph[match.end() :].lstrip()
    # "e.g. the", "3 p.m. and": a lowercase word after the period continues the sentence.
    if following[:1].islower():
        return False
    if (
        match.group().startswith(".")
        and len(match.group().rstrip("\"')]\u201d\u2019\u00bb")) == 1
    ):
        words = paragraph[: match.start()].split()
        word = words[-1].lower() if words else ""
        # Initials ("J. R. R. Tolkien") and known abbreviations ("Dr. Smith").
        if len(word) == 1 and word.isalpha() or word.lstrip("(\"'") in _ABBREVIATIONS:
            return False
    return True


def _pack(units: list[str], max_chars: int) -> list[str]:
    """Greedily join units with spaces up to ``max_chars``; cut any unit that is longer."""
    pieces: list[str] = []
    current = ""
    for unit in units:
        for part in _fit(unit, max_chars):
            if current and len(current) + 1 + len(part) <= max_chars:
                current = f"{current} {part}"
            else:
                if current:
                    pieces.append(current)
                current = part
    if current:
        pieces.append(current)
    return pieces


def _fit(unit: str, max_chars: int) -> list[str]:
    """``unit`` cut into parts of at most ``max_chars``: at clauses, then words, then anywhere."""
    if len(unit) <= max_chars:
        return [unit]
    clauses = _split_after(unit, _CLAUSE_END)
    if len(clauses) > 1:
        return _pack(clauses, max_chars)
    words = unit.split(" ")
    if len(words) > 1:
        return _pack(words, max_chars)
    return [unit[i : i + max_chars] for i in range(0, len(unit), max_chars)]


def _split_after(text: str, boundary: re.Pattern[str]) -> list[str]:
    parts: list[str] = []
    start = 0
    for match in boundary.finditer(text):
        parts.append(text[start : match.end()].strip())
        start = match.end()
    parts.append(text[start:].strip())
    return [part for part in parts if part]
