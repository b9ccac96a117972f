"""Sentence and paragraph splitting for long text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orpheus_trio.text.split import split_for_synthesis, split_text


def test_sentences_are_packed_up_to_the_limit_and_paragraphs_kept_apart() -> None:
    text = "One two. Three four! Five six?\n\n  New paragraph here. And more."
    assert split_text(text, max_chars=19) == [
        "One two.",
        "Three four!",
        "Five six?",
        "New paragraph here.",
        "And more.",
    ]
    assert split_text(text, max_chars=200) == [
        "One two. Three four! Five six?",
        "New paragraph here. And more.",
    ]


def test_abbreviations_initials_and_lowercase_continuations_do_not_end_sentences() -> (
    None
):
    text = "Dr. Smith met J. R. R. Tolkien at 3 p.m. on Monday. It was e.g. fine. Next one."
    assert split_text(text, max_chars=60) == [
        "Dr. Smith met J. R. R. Tolkien at 3 p.m. on Monday.",
        "It was e.g. fine. Next one.",
    ]
    assert (
        split_text(text, max_chars=52)[0]
        == "Dr. Smith met J. R. R. Tolkien at 3 p.m. on Monday."
    )


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_text('He said "stop." Then "go!" She left.', max_chars=16) == [
        'He said "stop."',
        'Then "go!"',
        "She left.",
    ]


def test_long_sentence_is_cut_at_clauses_then_words_then_inside_a_word() -> None:
    sentence = "alpha beta, gamma delta; epsilon zeta eta theta iota kappa"
    assert split_text(sentence, max_chars=25) == [
        "alpha beta, gamma delta;",
        "epsilon zeta eta theta",
        "iota kappa",
    ]
    assert split_text("abcdefghij", max_chars=4) == ["abcd", "efgh", "ij"]


def test_modes() -> None:
    long = "A sentence. " * 50
    assert split_for_synthesis("Short. Text.") == ["Short. Text."]
    assert split_for_synthesis("Short. Text.", "sentences", max_chars=6) == [
        "Short.",
        "Text.",
    ]
    assert split_for_synthesis(long, "never") == [long]
    auto = split_for_synthesis(long, "auto", max_chars=100)
    assert len(auto) > 1 and all(len(p) <= 100 for p in auto)
    with pytest.raises(ValueError, match="split must be one of auto, never, sentences"):
        split_for_synthesis("x", "words")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_chars"):
        split_text("x", max_chars=0)


def test_blank_text_gives_no_pieces_but_synthesis_gets_it_whole_to_reject() -> None:
    assert split_text("  \n\n \t ") == []
    assert split_for_synthesis(" " * 500) == [" " * 500]
    assert split_for_synthesis("\n\n", "sentences") == ["\n\n"]


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("ab .!?,;\n\"'")) | st.characters(), max_size=400
    ),
    st.integers(min_value=1, max_value=80),
)
def test_pieces_keep_every_character_in_order_within_the_limit(
    text: str, max_chars: int
) -> None:
    pieces = split_text(text, max_chars=max_chars)
    assert all(0 < len(p) <= max_chars for p in pieces)
    assert all(p == p.strip() for p in pieces)
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())


# -- every script (the table is shared with the streaming chunker's tests) -------------------

import regex  # noqa: E402
from _support_scripts import FAMILY, NFD_E, SCRIPT_CASES  # noqa: E402


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [case[1:] for case in SCRIPT_CASES],
    ids=[case[0] for case in SCRIPT_CASES],
)
def test_every_script_splits_into_the_exact_pieces(
    text: str, max_chars: int, expected: list[str]
) -> None:
    assert split_text(text, max_chars=max_chars) == expected


_CLUSTERS = [FAMILY, NFD_E, "\U0001f44d\U0001f3fd", "\U0001f1eb\U0001f1f7", "ऋ", "ति", "का",
             "유", "长", "a", "<laugh>", "<작은 웃음>", " ", " ", "。", "，", ". ", "! ", "«", "»"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_CLUSTERS), max_size=120), st.integers(8, 60))
def test_no_piece_boundary_falls_inside_a_grapheme_cluster_or_a_tag(
    clusters: list[str], max_chars: int
) -> None:
    text = "".join(clusters)
    pieces = split_text(text, max_chars=max_chars)
    assert all(0 < len(p) <= max_chars for p in pieces)

    def units(s: str) -> list[str]:
        return [u for u in regex.findall(r"<[^<>]+>|\X", s) if not u.isspace()]

    # Cut inside a cluster or a tag, and the units of the pieces differ from the text's.
    assert [u for p in pieces for u in units(p)] == units(text)


def test_limits_count_characters_not_bytes() -> None:
    korean = "가" * 10  # 30 bytes of UTF-8, 10 characters
    assert split_text(korean, max_chars=10) == [korean]
    assert split_text(korean, max_chars=5) == ["가" * 5, "가" * 5]
