"""Cloning prompts, the 7-per-frame code order and the SNAC encoder (random-init SNAC)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from _support_llm import BOS_ID, WORDS, scripted_model_dir
from _support_snac import random_frames, shared_decoder, shared_snac_dirs
from _support_voices import float_wav_bytes, reference_wav, speechlike, wav_bytes

from orpheus_trio.local.cloning import cloning_text_prompt, reference_token_ids
from orpheus_trio.local.llm import OrpheusLM, cloning_prompt_ids
from orpheus_trio.local.snac_encoder import (
    ReferenceAudioError,
    SnacEncoder,
    drop_repeated_frames,
    interleave,
    prepare_reference,
    snac_fingerprint_of,
)
from orpheus_trio.local.tokens import codes_from_token_ids, deinterleave, token_ids_from_codes
from orpheus_trio.voices.library import CustomVoice, Reference


@cache
def lm() -> OrpheusLM:
    return OrpheusLM.load(scripted_model_dir(6), device="cpu")


@cache
def encoder() -> SnacEncoder:
    return SnacEncoder.from_pretrained(shared_snac_dirs()[0], device="cpu")


def word(w: str) -> int:
    return WORDS.index(w) + 2


def audio_ids(frames: np.ndarray) -> list[int]:
    """Written out by hand: position k of frame i is 128266 + k*4096 + code."""
    return [128266 + k * 4096 + int(frames[i, k]) for i in range(len(frames)) for k in range(7)]


def test_one_reference_pair_layout() -> None:
    frames = random_frames(3, seed=1)
    frames[:, 0] = [5, 6, 7]  # no repeated first code: nothing dropped
    ids = cloning_prompt_ids(lm().tokenizer, "the fox", [("hello world", token_ids_from_codes(frames))])
    assert ids == [
        128259, BOS_ID, word("hello"), word("world"), 128009, 128260, 128261, 128257,
        *audio_ids(frames),
        128258, 128262,
        128259, BOS_ID, word("the"), word("fox"), 128009, 128260, 128261, 128257,
    ]  # fmt: skip


def test_two_reference_pairs_layout() -> None:
    first, second = random_frames(2, seed=2), random_frames(4, seed=3)
    ids = cloning_prompt_ids(
        lm().tokenizer,
        "quick",
        [("hello", token_ids_from_codes(first)), ("brown fox", token_ids_from_codes(second))],
    )
    assert ids == [
        128259, BOS_ID, word("hello"), 128009, 128260, 128261, 128257, *audio_ids(first), 128258, 128262,
        128259, BOS_ID, word("brown"), word("fox"), 128009, 128260, 128261, 128257, *audio_ids(second),
        128258, 128262,
        128259, BOS_ID, word("quick"), 128009, 128260, 128261, 128257,
    ]  # fmt: skip


def test_cloning_prompt_needs_references_with_audio() -> None:
    with pytest.raises(ValueError, match="at least one"):
        cloning_prompt_ids(lm().tokenizer, "hello", [])
    with pytest.raises(ValueError, match="no audio"):
        cloning_prompt_ids(lm().tokenizer, "hello", [("hello", [])])


def test_text_prompt_spells_the_same_ids() -> None:
    frames = random_frames(2, seed=4)
    text = cloning_text_prompt("fox", [("hello", token_ids_from_codes(frames))])
    tokens = "".join(f"<custom_token_{i - 128256}>" for i in audio_ids(frames))
    assert text == (
        "<custom_token_3><|begin_of_text|>hello<|eot_id|><custom_token_4><custom_token_5><custom_token_1>"
        + tokens
        + "<custom_token_2><custom_token_6>"
        + "<custom_token_3><|begin_of_text|>fox<|eot_id|><custom_token_4><custom_token_5><custom_token_1>"
    )


def test_ids_codes_ids_exact_on_random_codes() -> None:
    frames = random_frames(50, seed=5)
    ids = token_ids_from_codes(frames)
    assert ids == audio_ids(frames)
    assert np.array_equal(codes_from_token_ids(ids), frames)
    assert token_ids_from_codes(codes_from_token_ids(ids)) == ids


def test_interleave_is_the_inverse_of_deinterleave() -> None:
    frames = random_frames(20, seed=6)
    assert np.array_equal(interleave(*deinterleave(frames)), frames)
    l0, l1, l2 = np.arange(2), np.arange(100, 104), np.arange(200, 208)
    assert interleave(l0, l1, l2).tolist() == [
        [0, 100, 200, 201, 101, 202, 203],
        [1, 102, 204, 205, 103, 206, 207],
    ]
    with pytest.raises(ValueError, match="n, 2n, 4n"):
        interleave(l0, l1[:3], l2)


def test_repeated_frames_are_dropped_as_in_training() -> None:
    frames = random_frames(5, seed=7)
    frames[:, 0] = [9, 9, 3, 9, 9]
    kept = drop_repeated_frames(frames)
    assert np.array_equal(kept, frames[[0, 2, 3]])
    voice = CustomVoice("v", (Reference("hello", frames, 5 * 2048, 24_000),), "sha256:" + "0" * 64)
    assert reference_token_ids(voice) == [("hello", audio_ids(frames[[0, 2, 3]]))]


@pytest.mark.parametrize(
    ("rate", "channels", "seconds"),
    [(24_000, 1, 3.0), (44_100, 2, 3.0), (8_000, 1, 3.5)],
)
def test_encoder_frame_count_and_code_range(rate: int, channels: int, seconds: float) -> None:
    prepared = prepare_reference(reference_wav(seconds, rate, channels=channels))
    assert prepared.source_rate == rate and prepared.source_channels == channels
    assert abs(len(prepared.samples) - seconds * 24_000) <= 1
    frames = encoder().encode(prepared.samples)
    assert frames.shape == (-(-len(prepared.samples) // 2048), 7)
    assert frames.min() >= 0 and frames.max() <= 4095
    assert len(np.unique(frames[:, 0])) > 1  # not a constant: the audio reached the encoder


def test_batched_encode_matches_single_clips_of_equal_length() -> None:
    clips = [prepare_reference(reference_wav(3.0, seed=s)).samples for s in (1, 2)]
    batch = encoder().encode_batch(clips)
    assert all(np.array_equal(b, encoder().encode(c)) for b, c in zip(batch, clips, strict=True))


def test_encode_decode_round_trip_gives_the_clip_length() -> None:
    samples = prepare_reference(reference_wav(3.2)).samples
    frames = encoder().encode(samples)
    audio = shared_decoder().decode(frames)
    assert len(audio) == len(frames) * 2048
    assert 0 <= len(audio) - len(samples) < 2048
    assert np.isfinite(audio).all()


def test_fingerprint_names_the_weights_not_the_file_format() -> None:
    bin_dir, st_dir = shared_snac_dirs()
    assert snac_fingerprint_of(bin_dir) == snac_fingerprint_of(st_dir) == encoder().fingerprint
    assert encoder().fingerprint.startswith("sha256:")


def test_other_weights_have_another_fingerprint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from _support_snac import save_random_snac

    other = save_random_snac(tmp_path, seed=1)[1]
    assert snac_fingerprint_of(other) != encoder().fingerprint


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (reference_wav(2.0), "at least 3 s"),
        (reference_wav(31.0, 8_000), "at most 30 s"),
        (wav_bytes(np.zeros((24_000 * 4, 1), np.float32), 24_000), "silent"),
        (wav_bytes(np.full((24_000 * 4, 1), 1.0, np.float32), 24_000), "clipped"),
        (b"", "empty"),
        (b"this is not audio at all" * 100, "not an audio file"),
    ],
    ids=["too-short", "too-long", "silent", "clipped", "empty", "not-audio"],
)
def test_bad_reference_audio(audio: bytes, message: str) -> None:
    with pytest.raises(ReferenceAudioError, match=message):
        prepare_reference(audio)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples_are_refused(bad: float) -> None:
    samples = speechlike(4.0, 16_000)[:, 0].copy()
    samples[1234] = bad
    with pytest.raises(ReferenceAudioError, match="NaN or infinite"):
        prepare_reference(float_wav_bytes(samples, 16_000))


def test_float_wav_is_read_through_pyav() -> None:
    prepared = prepare_reference(float_wav_bytes(speechlike(3.0, 16_000)[:, 0], 16_000))
    assert prepared.source_rate == 16_000 and len(prepared.samples) == 72_000


def test_24_bit_wav() -> None:
    prepared = prepare_reference(wav_bytes(speechlike(3.0, 48_000), 48_000, width=3))
    reference = prepare_reference(wav_bytes(speechlike(3.0, 48_000), 48_000, width=2))
    assert np.max(np.abs(prepared.samples - reference.samples)) < 1e-3
