"""Orpheus tokens -> SNAC codes: hand-computed cases and the reference decoder's token bugs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orpheus_trio.errors import OrpheusError
from orpheus_trio.local.tokens import (
    FrameAssembler,
    IncompleteFrame,
    InvalidAudioToken,
    code_from_token_id,
    codes_from_token_ids,
    deinterleave,
    parse_custom_tokens,
    token_ids_from_codes,
)


def custom(n: int) -> str:
    return f"<custom_token_{n}>"


def text_of_frame(codes: list[int]) -> str:
    # Hand formula from the issue: N = code + 10 + k*4096 for position k.
    return "".join(custom(code + 10 + k * 4096) for k, code in enumerate(codes))


def ids_of_frame(codes: list[int]) -> list[int]:
    return [code + 128266 + k * 4096 for k, code in enumerate(codes)]


def test_code_from_token_id_hand_computed() -> None:
    assert code_from_token_id(128266, 0) == 0
    assert code_from_token_id(128266 + 4095, 0) == 4095
    assert code_from_token_id(128266 + 4096, 0) == -1  # that is position 1's code 0
    assert code_from_token_id(128266 + 4096, 1) == 0
    assert code_from_token_id(128266 + 3 * 4096 + 17, 3) == 17
    assert code_from_token_id(128266 + 7 * 4096, 6) == -1
    assert code_from_token_id(128265, 0) == -1


def test_parse_custom_tokens_maps_text_to_ids() -> None:
    assert parse_custom_tokens(" <custom_token_10>\n<custom_token_4106> ") == [128266, 128266 + 4096]
    assert parse_custom_tokens("") == []


def test_parse_custom_tokens_rejects_other_text_naming_where() -> None:
    with pytest.raises(InvalidAudioToken) as info:
        parse_custom_tokens("<custom_token_10><custom_token_4106>hello")
    assert info.value.index == 2 and info.value.position == 2
    assert "hello" in str(info.value)


def test_text_and_ids_give_the_same_hand_computed_codes() -> None:
    frame_a = [0, 1, 2, 3, 4, 5, 4095]
    frame_b = [4095, 7, 0, 9, 10, 11, 12]
    from_text = FrameAssembler().feed_text(text_of_frame(frame_a) + " " + text_of_frame(frame_b))
    from_ids = codes_from_token_ids(ids_of_frame(frame_a) + ids_of_frame(frame_b))
    assert from_text.tolist() == [frame_a, frame_b]
    assert from_ids.tolist() == [frame_a, frame_b]


def test_deinterleave_hand_computed() -> None:
    frames = [[0, 1, 2, 3, 4, 5, 6], [10, 11, 12, 13, 14, 15, 16]]
    cb0, cb1, cb2 = deinterleave(frames)
    assert cb0.tolist() == [0, 10]
    assert cb1.tolist() == [1, 4, 11, 14]
    assert cb2.tolist() == [2, 3, 5, 6, 12, 13, 15, 16]


def test_deinterleave_rejects_bad_shapes_and_codes() -> None:
    with pytest.raises(ValueError, match="shape"):
        deinterleave([[1, 2, 3]])
    with pytest.raises(ValueError, match="0..4095"):
        deinterleave([[4096, 0, 0, 0, 0, 0, 0]])


def test_code_zero_is_accepted_regression() -> None:
    # The reference decoder drops code 0 (`if token_id > 0`), shifting the rest.
    frames = codes_from_token_ids(ids_of_frame([0] * 7) + ids_of_frame([1] * 7))
    assert frames.tolist() == [[0] * 7, [1] * 7]


def test_code_4096_is_rejected_regression() -> None:
    # The reference accepts codes up to 4096 inclusive; 4096 is not a code.
    ids = ids_of_frame([1, 2, 3, 4, 5, 6, 7])
    ids[2] += 4096 - 3  # position 2 now carries "code 4096"
    with pytest.raises(InvalidAudioToken) as info:
        codes_from_token_ids(ids)
    assert (info.value.index, info.value.frame, info.value.position) == (2, 0, 2)
    assert "position 3, expected position 2" in str(info.value)
    last = ids_of_frame([1, 2, 3, 4, 5, 6, 4095])
    last[6] += 1  # code 4096 at position 6 is past every band
    with pytest.raises(InvalidAudioToken, match="not an audio token"):
        codes_from_token_ids(last)


def test_dropped_token_is_an_error_naming_its_position() -> None:
    ids = ids_of_frame([1] * 7) + ids_of_frame([2] * 7) + ids_of_frame([3] * 7)
    del ids[9]  # frame 1 loses its position-2 token
    with pytest.raises(InvalidAudioToken) as info:
        codes_from_token_ids(ids)
    assert isinstance(info.value, OrpheusError) and isinstance(info.value, ValueError)
    assert (info.value.index, info.value.frame, info.value.position) == (9, 1, 2)


def test_dropped_token_never_shifts_later_frames_regression() -> None:
    # The reference counts positions, so one lost token corrupts every later frame.
    frames = [[k, k + 1, k + 2, k + 3, k + 4, k + 5, k + 6] for k in range(0, 60, 10)]
    ids = [i for f in frames for i in ids_of_frame(f)]
    del ids[7 * 2 + 4]  # damage frame 2
    assembler = FrameAssembler(on_invalid="resync")
    out = assembler.feed_ids(ids)
    assembler.close()
    assert out.tolist() == frames[:2] + frames[3:]
    assert assembler.dropped_frames == 1
    assert assembler.dropped_tokens == 6  # the 6 surviving tokens of frame 2


def test_resync_waits_for_a_position_zero_token() -> None:
    good = ids_of_frame([5] * 7)
    stray = ids_of_frame([9] * 7)[3:]  # tail of a frame whose head was lost
    assembler = FrameAssembler(on_invalid="resync")
    out = assembler.feed_ids(stray + good)
    assert out.tolist() == [[5] * 7]
    assert assembler.dropped_tokens == 4 and assembler.dropped_frames == 0


def test_extra_position_zero_token_restarts_the_frame_under_resync() -> None:
    ids = ids_of_frame([1] * 7)[:3] + ids_of_frame([2] * 7)
    assembler = FrameAssembler(on_invalid="resync")
    assert assembler.feed_ids(ids).tolist() == [[2] * 7]
    assert (assembler.dropped_frames, assembler.dropped_tokens) == (1, 3)


def test_control_tokens_between_frames_are_skipped_inside_frames_are_errors() -> None:
    ids = [128257] + ids_of_frame([3] * 7) + [128258]
    assert codes_from_token_ids(ids).tolist() == [[3] * 7]
    inside = ids_of_frame([3] * 7)
    inside.insert(3, 128258)
    with pytest.raises(InvalidAudioToken, match="not an audio token") as info:
        codes_from_token_ids(inside)
    assert info.value.position == 3


def test_text_garbage_is_an_error_or_dropped() -> None:
    text = text_of_frame([1] * 7) + "oops" + text_of_frame([2] * 7)
    with pytest.raises(InvalidAudioToken, match="oops"):
        FrameAssembler().feed_text(text)
    assembler = FrameAssembler(on_invalid="resync")
    assert assembler.feed_text(text).tolist() == [[1] * 7, [2] * 7]
    assert assembler.dropped_tokens == 1


def test_text_token_split_across_pieces_is_buffered() -> None:
    text = text_of_frame([11, 12, 13, 14, 15, 16, 17])
    assembler = FrameAssembler()
    frames = [assembler.feed_text(text[i : i + 5]) for i in range(0, len(text), 5)]
    assembler.close()
    assert np.concatenate(frames).tolist() == [[11, 12, 13, 14, 15, 16, 17]]


def test_unfinished_text_token_at_close_is_an_error() -> None:
    assembler = FrameAssembler()
    assembler.feed_text("<custom_token_1")
    with pytest.raises(InvalidAudioToken):
        assembler.close()


def test_partial_last_frame_is_an_error_or_dropped() -> None:
    ids = ids_of_frame([1] * 7) + ids_of_frame([2] * 7)[:4]
    with pytest.raises(IncompleteFrame, match="frame 1: 4 of 7"):
        codes_from_token_ids(ids)
    assert codes_from_token_ids(ids, on_invalid="resync").tolist() == [[1] * 7]


def test_feeding_after_close_and_bad_policy_are_rejected() -> None:
    assembler = FrameAssembler()
    assembler.close()
    with pytest.raises(RuntimeError, match="closed"):
        assembler.feed_id(128266)
    with pytest.raises(ValueError, match="on_invalid"):
        FrameAssembler(on_invalid="ignore")  # type: ignore[arg-type]


@given(st.lists(st.lists(st.integers(0, 4095), min_size=7, max_size=7), max_size=20))
def test_token_ids_round_trip(frames: list[list[int]]) -> None:
    ids = token_ids_from_codes(np.array(frames, dtype=np.int64).reshape(-1, 7))
    assert codes_from_token_ids(ids).tolist() == frames
    text = "".join(custom(i - 128256) for i in ids)
    assert parse_custom_tokens(text) == ids
