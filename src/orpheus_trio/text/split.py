"""Splitting long text into pieces a TTS engine handles well: paragraphs, then sentences.

Orpheus-style engines generate a bounded number of audio tokens per request and
drift on very long inputs, so long text is sent as pieces of at most
``max_chars`` characters (code points, as every limit here and on the server
counts them). Pieces never cross a paragraph break; sentences are packed
together up to the limit; a sentence longer than the limit is cut at clause
punctuation, then between words, and only as a last resort between grapheme
clusters (never inside one: a letter and its combining marks, an emoji ZWJ
sequence, stay whole; so does an inline tag such as ``<laugh>`` or
``<작은 웃음>``). Only a cluster or tag longer than the limit itself is cut.

Every script the Orpheus checkpoints speak is handled:

- sentence ends ``. ! ? …`` need white space after them; ``。！？`` (Mandarin,
  written without spaces) and the Devanagari danda ``।`` ``॥`` do not;
- closing quotes and brackets stay with their sentence: ``” ’ » “`` (German
  closes with ``“``), ``」』）》``, and a French ``»`` after a space;
- clause marks ``, ; : — –`` need white space after them (so a decimal comma,
  ``3,5``, is never a cut), the full-width ``，、；：`` do not;
- a word cut never leaves French ``! ? ; : »`` (written after a space) at
  the start of a piece, nor an opener ``« „ ¿ ¡ “`` at the end of one;
- right-to-left text (Arabic, Hebrew) passes through as it is.

Whitespace is normalised (runs become one space; no-break spaces are kept, as
French typesetting uses them); no other character is added, dropped or
reordered, and a join that had no space (Mandarin) gets none.
"""

from __future__ import annotations

import re
from typing import Literal

import regex

__all__ = [
    "AUTO_SPLIT_CHARS",
    "DEFAULT_MAX_CHARS",
    "SPLIT_MODES",
    "SplitMode",
    "clause_ends",
    "grapheme_cut",
    "paragraph_ends",
    "sentence_ends",
    "split_for_synthesis",
    "split_text",
    "word_breaks",
]

#: ``auto`` splits text longer than this; ``sentences`` always splits; ``never`` sends it whole.
SplitMode = Literal["auto", "never", "sentences"]
SPLIT_MODES: tuple[SplitMode, ...] = ("auto", "never", "sentences")
AUTO_SPLIT_CHARS = 400
DEFAULT_MAX_CHARS = 300

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# White space other than the no-break spaces (which French puts before ! ? ; : »).
_SPACES = re.compile(r"[^\S\u00a0\u202f\u2007]+")
_CLOSERS = "\"')\\]\u201d\u2019\u00bb\u201c\u300d\u300f\uff09\u300b\u3009\u3011\uff02\uff07"
# Closing quotes/brackets, each possibly after a (no-break) space: « Oui ! »
_CLOSING = rf"(?:[ \u00a0\u202f]?[{_CLOSERS}])*"
_SENTENCE_END = re.compile(
    rf"[.!?\u2026\u203c\u2047-\u2049\u061f]+{_CLOSING}(?=\s)"  # needs a space after
    rf"|[\u3002\uff01\uff1f\u0964\u0965][.!?\u3002\uff01\uff1f\u0964\u0965]*{_CLOSING}"
)
_CLAUSE_END = re.compile(r"[,;:\u2014\u2013\u060c\u061b](?=\s)|[\uff0c\u3001\uff1b\uff1a]")
# An inline tag: <laugh>, <작은 웃음>, <嬉笑>: never cut inside.
_TAG = re.compile(r"<[^<>\s][^<>\n]{0,30}>")
_OPEN_TAG = re.compile(r"<[^<>\s][^<>\n]{0,30}")
# Written after a space in French (and a closing guillemet): not the start of a piece.
_NO_BREAK_BEFORE = frozenset("!?;:\u00bb\u203a%")
# Openers: not the end of a piece.
_NO_BREAK_AFTER = frozenset("\u00ab\u2039\u201e\u00bf\u00a1\u201c\u2018(")
_GRAPHEME = regex.compile(r"\X")
# Abbreviations after which a period rarely ends a sentence.
_ABBREVIATIONS = frozenset(
    [
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e",
        "no", "fig", "approx", "dept", "est", "inc", "ltd", "co", "mt",
    ]
)  # fmt: skip


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
        paragraph = _SPACES.sub(" ", paragraph).strip()
        if paragraph:
            pieces.extend(_pack(_cut_after(paragraph, sentence_ends(paragraph)), max_chars))
    return pieces


def sentence_ends(text: str) -> list[int]:
    """Offsets just past each sentence end in ``text`` (its punctuation and closing quotes).

    ``. ! ? …`` end a sentence only with whitespace after them; whether the
    next word is lowercase (a continuation, as in "e.g. the") is judged on what
    text follows, so an end followed by nothing yet counts. ``。！？ । ॥`` end
    one wherever they stand (outside a tag).
    """
    tags = _tag_spans(text)
    return [
        m.end()
        for m in _SENTENCE_END.finditer(text)
        if _is_sentence_end(text, m) and not _inside(m.end(), tags)
    ]


def paragraph_ends(text: str) -> list[int]:
    """Offsets where each paragraph break (a blank line) begins."""
    return [m.start() for m in _PARAGRAPH_BREAK.finditer(text)]


def clause_ends(text: str) -> list[int]:
    """Offsets just past each clause mark: ``, ; :`` and dashes with whitespace after, or ``，、；：``."""
    tags = _tag_spans(text)
    return [m.end() for m in _CLAUSE_END.finditer(text) if not _inside(m.end(), tags)]


def word_breaks(text: str) -> list[int]:
    """Offsets of the spaces ``text`` may be cut at between words (the space itself is dropped).

    No-break spaces are never cut at.

    Not inside a tag, not before French ``! ? ; : »``, not after ``« „ ¿ ¡ “``.
    """
    tags = _tag_spans(text)
    return [
        i
        for i, char in enumerate(text)
        if char.isspace()
        and char not in "\u00a0\u202f\u2007"
        and text[:i].strip()
        and text[i + 1 :].strip()
        and text[i + 1 : i + 2] not in _NO_BREAK_BEFORE
        and text[i - 1 : i] not in _NO_BREAK_AFTER
        and not _inside(i, tags)
    ]


def grapheme_cut(text: str, limit: int) -> int:
    """The last offset at most ``limit`` that falls between grapheme clusters and outside tags.

    Falls back to ``limit`` itself only when one cluster or tag is longer than ``limit``.
    """
    tags = _tag_spans(text)
    best = 0
    for match in _GRAPHEME.finditer(text, 0, len(text)):
        if match.end() > limit:
            break
        if not _inside(match.end(), tags):
            best = match.end()
    return best or min(limit, len(text))


def _tag_spans(text: str) -> list[tuple[int, int]]:
    """Where the tags are, and a tag still open at the end (streamed text: ``<작은 웃``)."""
    if "<" not in text:
        return []
    spans = [m.span() for m in _TAG.finditer(text)]
    start = text.rfind("<")
    if _OPEN_TAG.fullmatch(text, start) and not any(a <= start < b for a, b in spans):
        spans.append((start, len(text) + 1))
    return spans


def _inside(offset: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < offset < end for start, end in spans)


def _is_sentence_end(paragraph: str, match: re.Match[str]) -> bool:
    following = paragraph[match.end() :].lstrip()
    # "e.g. the", "3 p.m. and", « Oui ! » dit-il: a lowercase word continues the sentence.
    if following[:1].islower():
        return False
    # A closer not yet taken in (« Oui ! », dit-il): the sentence goes on after it.
    if following and following[0] in _CLOSERS:
        return False
    if match.group().startswith(".") and len(match.group().rstrip(_CLOSERS + " \u00a0")) == 1:
        words = paragraph[: match.start()].split()
        word = words[-1].lower() if words else ""
        # Initials ("J. R. R. Tolkien") and known abbreviations ("Dr. Smith").
        if len(word) == 1 and word.isalpha() or word.lstrip("(\"'") in _ABBREVIATIONS:
            return False
    return True


def _cut_after(text: str, ends: list[int]) -> list[str]:
    """``text`` cut at ``ends``, each part keeping the space after it (so joins are exact)."""
    parts: list[str] = []
    start = 0
    for end in sorted(set(ends)):
        if start < end < len(text):
            parts.append(text[start:end])
            start = end
    parts.append(text[start:])
    # Move each leading space onto the part before it.
    out: list[str] = []
    for part in parts:
        if out and part[:1] == " ":
            out[-1] += " "
            part = part[1:]
        if part:
            out.append(part)
    return out


def _pack(units: list[str], max_chars: int) -> list[str]:
    """Greedily join units (each with its own trailing space) up to ``max_chars``; cut any longer."""
    pieces: list[str] = []
    current = ""
    for unit in units:
        for part in _fit(unit, max_chars):
            if current and len((current + part).rstrip()) > max_chars:
                pieces.append(current.strip())
                current = part
            else:
                current += part
    if current.strip():
        pieces.append(current.strip())
    return pieces


def _fit(unit: str, max_chars: int) -> list[str]:
    """``unit`` cut into parts of at most ``max_chars``: at clauses, then words, then graphemes."""
    body = unit.rstrip()
    if len(body) <= max_chars:
        return [unit]
    trailing = unit[len(body) :]
    clauses = _cut_after(body, clause_ends(body))
    if len(clauses) > 1:
        return _with_trailing(_pack(clauses, max_chars), trailing)
    words = _cut_after(body, [i + 1 for i in word_breaks(body)])
    if len(words) > 1:
        return _with_trailing(_pack(words, max_chars), trailing)
    parts: list[str] = []
    rest = body
    while len(rest) > max_chars:
        cut = grapheme_cut(rest, max_chars)
        parts.append(rest[:cut])
        rest = rest[cut:]
    parts.append(rest)
    # Parts of one word join with no space.
    return _with_trailing(parts, trailing, joined=True)


def _with_trailing(parts: list[str], trailing: str, *, joined: bool = False) -> list[str]:
    """Parts that pack back into pieces: each ends in a space (a word join), or none (inside a word)."""
    sep = "" if joined else " "
    out = [part.strip() + sep for part in parts if part.strip()]
    if out:
        out[-1] = out[-1].rstrip() + trailing
    return out
