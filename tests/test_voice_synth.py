"""A custom voice on the on-box synthesizer: its prompt, the can-clone rule, removal mid-stream."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from _support_llm import scripted_model_dir, snac_dir
from _support_voices import reference_wav

from orpheus_trio.local.cloning import encode_voice, reference_token_ids
from orpheus_trio.local.llm import InvalidParameter, cloning_prompt_ids
from orpheus_trio.local.snac_encoder import SnacEncoder
from orpheus_trio.local.synthesizer import LocalSynthesizer
from orpheus_trio.voices.library import CustomVoice, VoiceLibrary

FRAMES = 6


@cache
def encoder() -> SnacEncoder:
    return SnacEncoder.from_pretrained(snac_dir(), device="cpu")


@cache
def sample_voice() -> CustomVoice:
    return encode_voice(encoder(), "my-voice", [("hello world", reference_wav(3.0)), ("the fox", reference_wav(3.5, 44_100, seed=3))])


def cloning_synth(directory: Path, *, can_clone: bool = True) -> LocalSynthesizer:
    return LocalSynthesizer.load(
        scripted_model_dir(FRAMES), snac_dir(), device="cpu", voices_dir=directory, can_clone=can_clone
    )


async def collect(synth: LocalSynthesizer, text: str, voice: str | None) -> bytes:
    async with synth.open_stream(text, voice) as audio:
        return b"".join([pcm async for pcm in audio])


def test_encode_voice_keeps_transcripts_and_lengths() -> None:
    voice = sample_voice()
    assert [r.text for r in voice.references] == ["hello world", "the fox"]
    assert [r.samples for r in voice.references] == [72_000, 84_000]
    assert [r.source_rate for r in voice.references] == [24_000, 44_100]
    assert [len(r.frames) for r in voice.references] == [36, 42]
    assert voice.snac == encoder().fingerprint


def test_a_bad_clip_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reference 2: the clip is 1.00 s long"):
        encode_voice(encoder(), "v", [("hello", reference_wav(3.0)), ("fox", reference_wav(1.0))])


async def test_a_custom_voice_speaks_with_the_cloning_prompt(tmp_path: Path) -> None:
    VoiceLibrary(tmp_path).add(sample_voice())
    synth = cloning_synth(tmp_path)
    expected = cloning_prompt_ids(synth.lm.tokenizer, "quick brown", reference_token_ids(sample_voice()))  # type: ignore[attr-defined]
    async with synth.open_stream("quick brown", "my-voice") as audio:
        pcm = b"".join([p async for p in audio])
        assert audio.prompt_tokens == len(expected)
        assert audio.finish_reason == "stop"
    assert len(pcm) == FRAMES * 2048 * 2
    # The stock voices work as before, on the same synthesizer.
    assert len(await collect(synth, "quick brown", "tara")) == len(pcm)


async def test_the_prompt_the_model_saw(tmp_path: Path) -> None:
    VoiceLibrary(tmp_path).add(sample_voice())
    synth = cloning_synth(tmp_path)
    seen: list[list[int]] = []
    generate = synth.lm.generate  # type: ignore[attr-defined]

    def spy(prompt, params):  # type: ignore[no-untyped-def]
        seen.append(list(prompt))
        return generate(prompt, params)

    synth.lm.generate = spy  # type: ignore[attr-defined]
    await collect(synth, "fox", "my-voice")
    assert seen == [cloning_prompt_ids(synth.lm.tokenizer, "fox", reference_token_ids(sample_voice()))]  # type: ignore[attr-defined]
    assert seen[0].count(128262) == 2  # two references, each ends its AI turn


def test_a_checkpoint_that_cannot_clone_says_why(tmp_path: Path) -> None:
    VoiceLibrary(tmp_path).add(sample_voice())
    synth = cloning_synth(tmp_path, can_clone=False)
    with pytest.raises(InvalidParameter, match="cannot clone: cloning needs the pretrained checkpoint"):
        synth.validate("my-voice", {})
    with pytest.raises(InvalidParameter, match="unknown voice 'nobody'"):
        synth.validate("nobody", {})


def test_a_voice_of_another_snac_is_refused_by_the_synthesizer(tmp_path: Path) -> None:
    other = CustomVoice("old", sample_voice().references, "sha256:" + "f" * 64)
    VoiceLibrary(tmp_path).add(other)
    with pytest.raises(InvalidParameter, match="another SNAC checkpoint"):
        cloning_synth(tmp_path).validate("old", {})


async def test_removing_and_adding_while_a_stream_uses_the_voice(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path)
    library.add(sample_voice())
    synth = cloning_synth(tmp_path)
    reference = await collect(synth, "quick brown", "my-voice")
    async with synth.open_stream("quick brown", "my-voice") as audio:
        first = await audio.__anext__()
        library.remove("my-voice")
        library.add(encode_voice(encoder(), "another", [("hello", reference_wav(3.0, seed=9))]))
        rest = b"".join([p async for p in audio])
    assert first + rest == reference  # the stream kept the prompt it started with
    with pytest.raises(InvalidParameter, match="unknown voice 'my-voice'"):
        synth.validate("my-voice", {})
    assert len(await collect(synth, "fox", "another")) == len(reference)


def test_voices_keyword_keeps_meaning_stock_names(tmp_path: Path) -> None:
    synth = LocalSynthesizer.load(scripted_model_dir(FRAMES), snac_dir(), device="cpu", voices=["tara"], voices_dir=tmp_path, can_clone=True)
    assert synth.voices == ("tara",)
    assert synth.voice_library is not None and synth.voice_library.snac == encoder().fingerprint
    assert synth.voice_library.names() == []
