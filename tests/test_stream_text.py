"""``stream_text``: text arriving as an LLM writes it, spoken sentence by sentence; barge-in.

The real client against the reference server's synthetic engine (exact audio) on
127.0.0.1; the LLM is a scripted async generator.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from _support_server import StartServer
from test_longtext import assert_same_but_the_joins

from orpheus_trio.client import OrpheusTTS
from orpheus_trio.audio.joins import DEFAULT_FADE_SAMPLES
from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream

#: One 50 ms chunk per character of text.
PARAMS: dict[str, Any] = {"chunk_samples": 1200}


@dataclass
class WatchedEngine(SyntheticEngine):
    """The synthetic engine, noting when each request started, ended, or was cancelled."""

    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    cancelled: dict[str, float] = field(default_factory=dict)

    def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        return self._watched(text, super().synthesize(text, voice, params))

    async def _watched(
        self, text: str, inner: AsyncGenerator[Any, None]
    ) -> AsyncGenerator[Any, None]:
        self.started[text] = trio.current_time()
        try:
            async with aclosing(inner):
                async for piece in inner:
                    yield piece
        except trio.Cancelled:
            self.cancelled[text] = trio.current_time()
            raise
        self.ended[text] = trio.current_time()


async def llm(
    text: str, *, token_s: float, stalls: dict[int, float] | None = None
) -> AsyncIterator[str]:
    """``text`` word by word, one every ``token_s``; ``stalls``: extra wait before word ``i``."""
    words = text.split(" ")
    for i, word in enumerate(words):
        await trio.sleep(token_s + (stalls or {}).get(i, 0.0))
        yield word if i == 0 else " " + word


SENTENCES = ["Hello there, nice to meet you.", "The weather is fine today.", "Bye now."]


async def test_each_sentence_is_spoken_once_complete_not_at_the_end_of_the_input(
    start_server: StartServer,
) -> None:
    engine = WatchedEngine()
    server = await start_server(engine)
    text = " ".join(SENTENCES)
    # The LLM stalls for a second after the first sentence (word 6 starts the second).
    first_audio_at: float | None = None
    received = bytearray()
    async with OrpheusTTS(server.base_url) as tts:
        start = trio.current_time()
        audio = tts.stream_text(llm(text, token_s=0.01, stalls={6: 1.0}), **PARAMS)
        async with aclosing(audio):
            async for pcm in audio:
                if first_audio_at is None:
                    first_audio_at = trio.current_time()
                received += pcm
    assert_same_but_the_joins(
        bytes(received), [b"".join(expected_stream(s, None, PARAMS)) for s in SENTENCES]
    )
    assert list(engine.started) == SENTENCES  # one request per sentence, in order
    assert first_audio_at is not None
    # The first sentence was requested 0.1 s (end_wait_s) after its last word, with the LLM
    # stalled, a second before the input ended; its audio came right after.
    assert engine.started[SENTENCES[0]] - start == pytest.approx(0.06 + 0.1, abs=0.3)
    assert first_audio_at - start < 0.6
    assert engine.started[SENTENCES[2]] - start > 1.06


async def test_input_that_ends_mid_sentence_is_spoken_to_its_end(
    start_server: StartServer,
) -> None:
    server = await start_server(SyntheticEngine())
    async with OrpheusTTS(server.base_url) as tts:
        audio = tts.stream_text(llm("One. And then", token_s=0.0), **PARAMS)
        async with aclosing(audio):
            received = b"".join([pcm async for pcm in audio])
    assert_same_but_the_joins(
        received, [b"".join(expected_stream(s, None, PARAMS)) for s in ("One.", "And then")]
    )


async def test_an_llm_error_is_raised_after_the_audio_of_the_sentences_before_it(
    start_server: StartServer,
) -> None:
    async def failing() -> AsyncIterator[str]:
        yield "Fine. Then"
        await trio.sleep(0.05)
        raise ConnectionError("llm connection lost")

    server = await start_server(SyntheticEngine())
    received = bytearray()
    async with OrpheusTTS(server.base_url) as tts:
        with pytest.raises(ConnectionError, match="llm connection lost") as info:
            async with aclosing(tts.stream_text(failing(), **PARAMS)) as audio:
                async for pcm in audio:
                    received += pcm
    fine = b"".join(expected_stream("Fine.", None, PARAMS))
    # Its last 5 ms may be faded out: when it ended, more text was still to come.
    assert len(received) == len(fine)
    assert received[: -2 * DEFAULT_FADE_SAMPLES] == fine[: -2 * DEFAULT_FADE_SAMPLES]
    assert "while reading the texts (after 1 pieces)" in info.value.__notes__


# -- barge-in -----------------------------------------------------------------------------------


async def speak_then_interrupt(
    server_url: str, how: str, engine: WatchedEngine, prefetch: int
) -> tuple[float, list[float]]:
    """Play until two sentences are on the server, interrupt; the time, and audio after it."""
    text = " ".join(
        ["This first sentence takes a good while to say.", "So does the second one here.",
         "And the third.", "And a fourth."]
    )  # fmt: skip
    late: list[float] = []
    interrupted_at = 0.0
    # Paced like speech: each 50 ms chunk takes 50 ms to make.
    params = {**PARAMS, "rtf": 1.0}
    async with OrpheusTTS(server_url) as tts:
        audio = tts.stream_text(llm(text, token_s=0.005), prefetch=prefetch, **params)
        with trio.CancelScope() as scope:
            async with aclosing(audio):
                async for _ in audio:
                    if interrupted_at:
                        late.append(trio.current_time())
                    elif len(engine.started) == prefetch + 1:
                        await trio.sleep(0.2)  # mid-sentence: every request is streaming
                        interrupted_at = trio.current_time()
                        if how == "cancel":
                            scope.cancel()
                        else:
                            await audio.aclose()
        if how == "aclose":
            with pytest.raises(StopAsyncIteration):
                await audio.__anext__()
        # Give the server its 100 ms to notice (it notices far sooner).
        await trio.sleep(0.2)
    return interrupted_at, late


@pytest.mark.parametrize("how", ["cancel", "aclose"])
@pytest.mark.parametrize("prefetch", [1, 2])
async def test_barge_in_cancels_every_request_in_flight_at_once_and_no_audio_follows(
    start_server: StartServer, how: str, prefetch: int
) -> None:
    engine = WatchedEngine()
    server = await start_server(engine)
    interrupted_at, late = await speak_then_interrupt(server.base_url, how, engine, prefetch)
    assert late == []
    assert len(engine.started) == prefetch + 1  # the one playing and those prefetched
    assert engine.ended == {}  # none ran to its end
    assert set(engine.cancelled) == set(engine.started)
    for text, at in engine.cancelled.items():
        assert at - interrupted_at < 0.1, f"{text!r} cancelled {at - interrupted_at:.3f} s late"


def test_stream_text_refuses_a_plain_string_clearly() -> None:
    async def main() -> None:
        async with OrpheusTTS("http://127.0.0.1:9") as tts:
            with pytest.raises(TypeError, match="async iterable of str"):
                async with aclosing(tts.stream_text("Hello.")) as audio:  # type: ignore[arg-type]
                    async for _ in audio:
                        pass

    trio.run(main)


async def test_mandarin_streamed_without_spaces_is_spoken_sentence_by_sentence(
    start_server: StartServer,
) -> None:
    engine = WatchedEngine()
    server = await start_server(engine)
    sentences_zh = ["你好。", "今天天气很好！", "我们去公园吧？"]

    async def characters() -> AsyncIterator[str]:
        for char in "".join(sentences_zh):  # an LLM writing Mandarin: no spaces anywhere
            await trio.sleep(0.005)
            yield char

    async with OrpheusTTS(server.base_url) as tts:
        audio = tts.stream_text(characters(), **PARAMS)
        async with aclosing(audio):
            received = b"".join([pcm async for pcm in audio])
    assert list(engine.started) == sentences_zh  # one request per sentence, none glued
    assert_same_but_the_joins(
        received, [b"".join(expected_stream(s, None, PARAMS)) for s in sentences_zh]
    )
