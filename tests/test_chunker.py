"""The sentence chunker (sans-IO, exact times) and its I/O shell on trio's MockClock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio.testing

from orpheus_trio.text.chunker import SentenceChunker
from orpheus_trio.text.stream import sentences


def tokens(text: str) -> list[str]:
    """``text`` as an LLM streams it: words with their leading space."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


# -- sans-IO ----------------------------------------------------------------------------------


def test_a_sentence_is_ready_once_the_next_text_begins() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("Hello there", 0.0) == []
    assert chunker.feed(".", 0.1) == []
    assert chunker.feed(" ", 0.2) == []  # "Hello there. the..." would continue the sentence
    assert chunker.feed("How", 0.3) == ["Hello there."]
    assert chunker.pending == "How"
    assert chunker.feed(" are you? Fine", 0.4) == ["How are you?"]
    assert chunker.finish(0.5) == ["Fine"]


def test_textsplit_rules_decide_what_ends_a_sentence() -> None:
    chunker = SentenceChunker()
    # An abbreviation, initials and "e.g." followed by lowercase end nothing.
    assert chunker.feed("Dr. Smith met J. R. Tolkien, e.g. the writer. He", 0.0) == [
        "Dr. Smith met J. R. Tolkien, e.g. the writer."
    ]
    assert chunker.feed(' said "yes." Then', 0.0) == ['He said "yes."']
    # A paragraph break ends a piece even without punctuation (a heading, a list item).
    assert chunker.feed(" a heading\n\nNext", 0.0) == ["Then a heading"]
    assert chunker.finish(0.0) == ["Next"]


def test_emotion_tags_pass_through_untouched() -> None:
    chunker = SentenceChunker()
    pieces = chunker.feed("<laugh> That is funny. <sigh> Okay, <gasp> fine. Bye", 0.0)
    assert pieces == ["<laugh> That is funny. <sigh> Okay, <gasp> fine."]


def test_streamed_text_comes_out_whole_in_order_with_nothing_added_or_dropped() -> None:
    text = (
        "Well, that depends. If you want speed, pick the first; if you want quality, "
        "take the second option, which is slower. Mr. Jones agrees! Does he? "
        "Nobody knows... Anyway, let us move on to the next point right away."
    )
    chunker = SentenceChunker()
    pieces = [p for t in tokens(text) for p in chunker.feed(t, 0.0)] + chunker.finish(0.0)
    assert pieces[:3] == [
        "Well, that depends.",
        "If you want speed, pick the first; if you want quality, take the second option, "
        "which is slower.",
        "Mr. Jones agrees!",
    ]
    assert " ".join(pieces) == text


def test_a_long_clause_is_cut_at_its_last_clause_mark_once_it_has_waited_max_wait() -> None:
    chunker = SentenceChunker(max_wait_s=1.0, min_chars=10)
    assert chunker.feed("So the thing about", 10.0) == []
    assert chunker.deadline == 11.0  # the wait counts from the first text
    assert chunker.feed(" the long report, which", 10.5) == []
    assert chunker.deadline == 11.0  # more text does not restart it
    assert chunker.poll(10.999) == []
    assert chunker.poll(11.0) == ["So the thing about the long report,"]
    # What is left waits afresh from the cut; one word that may be unfinished is no cut at all.
    assert chunker.pending == "which"
    assert chunker.deadline is None
    assert chunker.feed(" nobody read", 11.2) == []
    assert chunker.deadline == 12.0
    assert chunker.poll(12.0) == ["which nobody"]  # between words: "read" may go on
    assert chunker.pending == "read"


def test_without_a_clause_mark_the_early_cut_falls_between_words() -> None:
    chunker = SentenceChunker(max_wait_s=0.5, min_chars=10)
    assert chunker.feed("one two three four fiv", 0.0) == []
    assert chunker.poll(0.5) == ["one two three four"]  # "fiv" may be half a word
    assert chunker.pending == "fiv"


def test_short_text_waits_for_more_however_long_it_has_waited() -> None:
    chunker = SentenceChunker(max_wait_s=0.5, min_chars=30)
    assert chunker.feed("Well, I", 0.0) == []
    assert chunker.deadline is None
    assert chunker.poll(100.0) == []


def test_a_finished_looking_sentence_is_ready_after_end_wait_whatever_its_length() -> None:
    chunker = SentenceChunker(end_wait_s=0.25, max_wait_s=5.0, min_chars=100)
    assert chunker.feed("Sure", 3.0) == []
    assert chunker.feed(".", 3.1) == []
    assert chunker.deadline == pytest.approx(3.35)  # counted from the text that ended it
    assert chunker.poll(3.3) == []
    assert chunker.poll(3.35) == ["Sure."]
    assert chunker.deadline is None and chunker.pending == ""
    chunker.feed("Ask Dr.", 4.0)  # an abbreviation: not finished-looking
    assert chunker.deadline is None
    # A lowercase word after the period continues the sentence after all.
    chunker = SentenceChunker(end_wait_s=0.25)
    assert chunker.feed("We meet at 3 p.m.", 0.0) == []
    assert chunker.feed(" and talk. Then", 0.2) == ["We meet at 3 p.m. and talk."]


def test_a_sentence_running_past_max_chars_is_cut_at_once() -> None:
    chunker = SentenceChunker(max_chars=40, min_chars=10, max_wait_s=math.inf)
    text = "this sentence, which goes on and on without end, never stops"
    pieces = [p for t in tokens(text) for p in chunker.feed(t, 0.0)]
    assert pieces == ["this sentence,", "which goes on and on without end,"]
    assert all(len(p) <= 40 for p in pieces)
    assert chunker.deadline is None  # math.inf: never cut early


def test_bad_settings_and_misuse_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="max_wait_s must be >= 0"):
        SentenceChunker(max_wait_s=-1)
    with pytest.raises(ValueError, match="end_wait_s must be >= 0"):
        SentenceChunker(end_wait_s=math.nan)
    with pytest.raises(ValueError, match="min_chars must be >= 1"):
        SentenceChunker(min_chars=0)
    with pytest.raises(ValueError, match=r"max_chars \(10\) must be >= min_chars \(40\)"):
        SentenceChunker(max_chars=10)
    chunker = SentenceChunker()
    with pytest.raises(TypeError, match="must be str, got bytes"):
        chunker.feed(b"hi", 0.0)  # type: ignore[arg-type]
    assert chunker.finish(0.0) == []
    with pytest.raises(RuntimeError, match="after finish"):
        chunker.feed("more", 0.0)


# -- the I/O shell on MockClock -----------------------------------------------------------------


async def llm(script: Sequence[tuple[float, str]], log: list[str]) -> AsyncIterator[str]:
    """Yield each text after its delay; note how it ended."""
    try:
        for delay, text in script:
            await trio.sleep(delay)
            yield text
        log.append("ended")
    finally:
        log.append("closed")


async def collect(source: AsyncIterator[str]) -> list[tuple[float, str]]:
    return [(trio.current_time(), s) async for s in source]


async def test_sentences_come_out_when_complete_and_a_stalled_clause_at_max_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    script = [
        (0.1, "Hi there."),
        (0.1, " Let me check"),
        (0.1, " the weather for you,"),
        (5.0, " one moment."),  # the LLM stalls (a tool call) in the middle of a sentence
    ]
    start = trio.current_time()
    got = await collect(sentences(llm(script, log), SentenceChunker(max_wait_s=1.0, min_chars=20)))
    assert [(round(t - start, 6), s) for t, s in got] == [
        (0.2, "Hi there."),  # as soon as the next text began
        (1.2, "Let me check the weather for you,"),  # 1 s after " Let me check" arrived: no text needed
        (5.3, "one moment."),  # the end of input flushes the rest
    ]
    assert log == ["ended", "closed"]


async def test_a_failing_source_raises_after_the_sentences_completed_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "One. Two"
        await trio.sleep(1)
        raise ConnectionError("llm went away")

    got: list[str] = []
    with pytest.raises(ConnectionError, match="llm went away"):
        async for s in sentences(broken()):
            got.append(s)
    assert got == ["One."]


async def test_leaving_early_closes_the_source_and_bad_sources_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    source = sentences(llm([(0.1, "One. Two. "), (100, "Three.")], log))
    async for s in source:
        assert s == "One."
        break
    await source.aclose()
    assert log == ["closed"]
    with pytest.raises(TypeError, match="async iterable of str"):
        async for _ in sentences("Hello."):  # type: ignore[arg-type]
            pass

    async def not_text() -> AsyncIterator[bytes]:
        yield b"Hello."

    with pytest.raises(TypeError, match="text_chunks must yield str, got bytes"):
        async for _ in sentences(not_text()):  # type: ignore[arg-type]
            pass


# -- emotion tags -------------------------------------------------------------------------------

TAGGED = (
    "Well <sigh> that went badly. <laugh> I mean it! Oh <gasp> look at that, <chuckle> fine. "
    "<cough> Excuse me. <sniffle> <groan> <yawn> Goodnight."
)


def test_emotion_tags_pass_through_the_splitter_untouched() -> None:
    from orpheus_trio.server.engine import ORPHEUS_EMOTION_TAGS
    from orpheus_trio.text.split import split_text

    pieces = split_text(TAGGED, max_chars=30)
    assert len(pieces) > 3
    assert " ".join(pieces) == TAGGED.strip()
    joined = " ".join(pieces)
    for tag in ORPHEUS_EMOTION_TAGS:
        assert joined.count(tag) == 1, tag
        assert sum(p.count(tag) for p in pieces) == 1, f"{tag} cut across pieces"


def test_emotion_tags_pass_through_the_chunker_token_by_token() -> None:
    from orpheus_trio.server.engine import ORPHEUS_EMOTION_TAGS

    chunker = SentenceChunker(max_wait_s=math.inf)
    out: list[str] = []
    now = 0.0
    # Tokens cut inside the tags: "<la", "ugh>" — the chunker must not care.
    for i in range(0, len(TAGGED), 3):
        now += 0.033
        out += chunker.feed(TAGGED[i : i + 3], now)
        out += chunker.poll(now)
    out += chunker.finish(now)
    assert " ".join(out) == TAGGED.strip()
    for tag in ORPHEUS_EMOTION_TAGS:
        assert sum(s.count(tag) for s in out) == 1, tag


# -- every script --------------------------------------------------------------------------------

import regex  # noqa: E402
from _support_scripts import SCRIPT_CASES  # noqa: E402


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [case[1:] for case in SCRIPT_CASES],
    ids=[case[0] for case in SCRIPT_CASES],
)
def test_every_script_streamed_a_grapheme_at_a_time_gives_the_exact_pieces(
    text: str, max_chars: int, expected: list[str]
) -> None:
    chunker = SentenceChunker(
        max_chars=max_chars, min_chars=1, max_wait_s=math.inf, end_wait_s=math.inf
    )
    pieces: list[str] = []
    for cluster in regex.findall(r"\X", text):
        pieces += chunker.feed(cluster, 0.0)
    assert pieces + chunker.finish(0.0) == expected


def test_mandarin_needs_no_space_to_end_a_sentence_or_cut_a_waiting_clause() -> None:
    chunker = SentenceChunker(max_wait_s=1.0, min_chars=4, end_wait_s=0.1)
    assert chunker.feed("你好。今", 0.0) == ["你好。"]  # the next sentence has begun
    assert chunker.feed("天天气很好，我们", 0.5) == []
    assert chunker.deadline == 1.0
    assert chunker.poll(1.0) == ["今天天气很好，"]  # the wait ran out: cut at the full-width comma
    assert chunker.feed("去公园吧！", 1.2) == []
    assert chunker.poll(1.3) == ["我们去公园吧！"]  # ends like a sentence; end_wait_s passed


def test_a_streamed_tag_is_never_cut_at_overflow() -> None:
    chunker = SentenceChunker(max_chars=8, min_chars=1, max_wait_s=math.inf)
    got = []
    for char in "네 <작은 웃음> 정말 좋아요":  # overflows at "네 <작은 웃음", the tag still open
        got += chunker.feed(char, 0.0)
    assert got + chunker.finish(0.0) == ["네", "<작은 웃음>", "정말 좋아요"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CLUSTERS = ["\U0001f468\u200d\U0001f469\u200d\U0001f467", "e\u0301", "ऋ", "ति", "유", "长", "a",
             "<laugh>", "<작은 웃음>", " ", " ", "。", "，", ". ", "! ", "«", "»", ", "]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_CLUSTERS), st.floats(0, 0.5)), max_size=80),
    st.integers(8, 40),
)
def test_streamed_pieces_never_cut_a_grapheme_cluster_or_a_tag(
    clusters: list[tuple[str, float]], max_chars: int
) -> None:
    chunker = SentenceChunker(max_chars=max_chars, min_chars=4, max_wait_s=0.3, end_wait_s=0.1)
    now, pieces = 0.0, []
    for cluster, wait in clusters:  # one code point at a time, as badly as an LLM could
        now += wait
        pieces += chunker.poll(now)
        for char in cluster:
            pieces += chunker.feed(char, now)
    pieces += chunker.finish(now)
    assert all(0 < len(p) <= max_chars for p in pieces)

    def units(s: str) -> list[str]:
        return [u for u in regex.findall(r"<[^<>]+>|\X", s) if not u.isspace()]

    assert [u for p in pieces for u in units(p)] == units("".join(c for c, _ in clusters))
