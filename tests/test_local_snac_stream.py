"""Streaming and batched SNAC decode: the same audio as one whole-utterance decode.

The random-init SNAC of tests/_support_snac.py is used with its noise blocks
off, so decoding is deterministic and streamed output can be compared with
the whole-utterance decode sample by sample.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import trio
import trio.testing
from _support_snac import random_frames, shared_decoder, snr_db

from orpheus_trio.local.batching import BatchingDecoder
from orpheus_trio.local.stream_decode import (
    DecodeWindow,
    StreamingDecoder,
    StreamPlanner,
    pcm_from_tokens,
)
from orpheus_trio.local.tokens import InvalidAudioToken, token_ids_from_codes

FRAME = 2048


def planner(**kwargs: int) -> StreamPlanner:
    return StreamPlanner(context_latents=(10, 10), **kwargs)


def drain(p: StreamPlanner) -> list[DecodeWindow]:
    windows = []
    while (w := p.next_window()) is not None:
        windows.append(w)
    return windows


# --- the planner alone (no model) ---------------------------------------------------


def test_first_window_needs_four_frames_and_emits_frame_zero() -> None:
    p = planner()
    p.push(random_frames(3, seed=0))
    assert p.next_window() is None  # frame 0 still needs frame 3 after it
    p.push(random_frames(1, seed=1))
    (w,) = drain(p)
    assert w.first_frame == 0 and (w.keep_start, w.keep_stop) == (0, FRAME)
    assert len(w.frames) == 4 and (w.latent_start, w.latent_stop) == (0, 14)


def test_hops_ramp_up_to_max_hop_and_windows_tile_the_utterance() -> None:
    p = planner(max_hop=8)
    windows = []
    for k in range(60):
        p.push(random_frames(1, seed=k))
        windows += drain(p)
    p.finish()
    windows += drain(p)
    emitted = [(w.keep_stop - w.keep_start) // FRAME for w in windows]
    assert emitted[:6] == [1, 2, 6, 8, 8, 8]
    assert sum(emitted) == 60 and p.done
    starts = [w.first_frame for w in windows]
    assert starts == list(np.cumsum([0] + emitted[:-1]))
    # Steady state: one window shape, so streams batch together.
    assert len({w.shape_key for w in windows[3:-1]}) == 1


def test_windows_never_exceed_the_hop_even_when_many_frames_wait() -> None:
    p = planner(max_hop=16)
    p.push(random_frames(100, seed=0))
    emitted = [(w.keep_stop - w.keep_start) // FRAME for w in drain(p)]
    assert emitted[:5] == [1, 2, 6, 16, 16]  # the first audio stays small
    assert sum(emitted) == 89  # 8 ready frames wait for a full hop ...
    p.finish()
    assert [(w.keep_stop - w.keep_start) // FRAME for w in drain(p)] == [11]  # ... or finish()


def test_low_water_releases_ready_frames_when_the_source_is_slow() -> None:
    frame_s = 2048 / 24000
    p = planner()
    p.push(random_frames(4, seed=0))
    assert drain_at(p, 0.0) == [1]  # playback starts at t=0 with one frame (85 ms)
    p.push(random_frames(1, seed=1))  # 80 ms later: a source barely faster than real time
    assert p.next_window() is None  # no clock: wait for a full hop of 2
    assert drain_at(p, 0.08) == [1]  # the next frame is ~80 ms away, 5 ms of audio left
    p.push(random_frames(20, seed=2))
    assert drain_at(p, 0.09) == [4, 12]  # frames plentiful: hops keep doubling
    p.push(random_frames(2, seed=3))
    assert drain_at(p, 0.10) == []  # 18 frames (1.5 s) out: wait for a full hop of 16
    assert drain_at(p, 18 * frame_s - 0.2) == [6]  # 0.2 s left: send the 6 ready frames


def test_fast_frames_get_full_hops_even_when_the_listener_starves() -> None:
    # An overloaded decoder: each decode takes long, then queued frames arrive at once.
    p = planner()
    p.push(random_frames(4, seed=0))
    assert p.next_window(0.0) is not None
    assert p.next_window(1.0) is None  # the decode returned at t=1 s: the audio ran out
    emitted: list[int] = []
    for k in range(30):
        p.push(random_frames(1, seed=k))
        emitted += drain_at(p, 1.0 + 0.001 * (k + 1))
    assert emitted == [2, 6, 16]  # no 1-frame windows: the hop fills within ms


def drain_at(p: StreamPlanner, now: float) -> list[int]:
    emitted = []
    while (w := p.next_window(now)) is not None:
        emitted.append((w.keep_stop - w.keep_start) // FRAME)
    return emitted


def test_short_utterance_is_released_by_finish() -> None:
    p = planner()
    p.push(random_frames(2, seed=0))
    assert p.next_window() is None
    p.finish()
    (w,) = drain(p)
    assert (w.keep_start, w.keep_stop, len(w.frames)) == (0, 2 * FRAME, 2)


def test_planner_keeps_only_the_context_it_needs() -> None:
    p = planner(max_hop=4)
    for k in range(200):
        p.push(random_frames(1, seed=k))
        drain(p)
    assert len(p._buffer) <= 4 + 3 + 3 + 1


def test_planner_rejects_bad_settings_and_late_frames() -> None:
    with pytest.raises(ValueError, match="first_hop"):
        planner(first_hop=4, max_hop=2)
    p = planner()
    p.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        p.push(random_frames(1, seed=0))


# --- streamed audio equals the whole decode ----------------------------------------


@pytest.mark.parametrize(
    ("n_frames", "push_sizes"),
    [(1, [1]), (3, [1]), (4, [1]), (5, [2]), (23, [1]), (23, [3, 1, 7]), (23, [23])],
)
def test_streamed_audio_matches_whole_decode(n_frames: int, push_sizes: list[int]) -> None:
    decoder = shared_decoder()
    frames = random_frames(n_frames, seed=n_frames)
    whole = decoder.decode(frames)
    stream = StreamingDecoder(decoder, max_hop=8)
    pieces = []
    i = 0
    for size in push_sizes * n_frames:
        if i >= n_frames:
            break
        stream.push(frames[i : i + size])
        pieces.append(stream.pop_audio())
        i += size
    stream.flush()
    pieces.append(stream.pop_audio())
    streamed = np.concatenate(pieces)
    assert streamed.shape == whole.shape  # every frame, the last ones included
    assert snr_db(whole, streamed) >= 60
    assert snr_db(whole, streamed) > 100  # in fact equal to float rounding


def test_first_frame_audio_is_emitted_regression() -> None:
    # The reference keeps samples 2048:4096 of its first window: frame 0 is lost.
    decoder = shared_decoder()
    frames = random_frames(6, seed=11)
    stream = StreamingDecoder(decoder)
    stream.push(frames[:3])
    assert len(stream.pop_audio()) == 0
    stream.push(frames[3:4])  # 4 frames in: first audio, and it is frame 0
    first = stream.pop_audio()
    assert len(first) == FRAME
    assert snr_db(decoder.decode(frames)[:FRAME], first) > 100


def test_last_frames_are_flushed_regression() -> None:
    # The reference never decodes the frames that arrive after its last full window.
    decoder = shared_decoder()
    frames = random_frames(7, seed=12)
    stream = StreamingDecoder(decoder)
    stream.push(frames)
    head = stream.pop_audio()
    assert len(head) <= 4 * FRAME  # at least the 3 look-ahead frames are held back
    stream.flush()
    tail = stream.pop_audio()
    assert len(head) + len(tail) == 7 * FRAME
    assert snr_db(decoder.decode(frames)[-3 * FRAME :], tail[-3 * FRAME :]) > 100


# --- tokens to PCM, alone and batched ---------------------------------------------------


async def aiter_of(items: list[int] | list[str]) -> AsyncIterator[int | str]:
    for item in items:
        yield item
        await trio.lowlevel.checkpoint()


def pcm_of(audio: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(audio, -1, 1) * 32767).astype(np.int16)


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    out = b""
    async for chunk in chunks:
        assert len(chunk) % 2 == 0 and len(chunk) > 0
        out += chunk
    return out


async def test_pcm_from_token_ids_and_text_match_whole_decode() -> None:
    decoder = shared_decoder()
    frames = random_frames(9, seed=13)
    ids = token_ids_from_codes(frames)
    expected = pcm_of(decoder.decode(frames))
    from_ids = np.frombuffer(await collect(pcm_from_tokens(aiter_of(ids), decoder)), "<i2")
    text = [f"<custom_token_{i - 128256}>" for i in ids]
    from_text = np.frombuffer(await collect(pcm_from_tokens(aiter_of(text), decoder)), "<i2")
    for got in (from_ids, from_text):
        assert got.shape == expected.shape
        assert np.abs(got.astype(np.int32) - expected).max() <= 1  # float rounding at .5


async def test_pcm_from_tokens_raises_on_a_bad_token() -> None:
    ids = token_ids_from_codes(random_frames(5, seed=14))
    del ids[10]
    with pytest.raises(InvalidAudioToken) as info:
        await collect(pcm_from_tokens(aiter_of(ids), shared_decoder()))
    assert (info.value.frame, info.value.position) == (1, 3)


async def test_batched_streams_equal_one_by_one_decoding() -> None:
    decoder = shared_decoder()
    lengths = [2, 9, 14, 14, 14]
    utterances = [random_frames(n, seed=100 + i) for i, n in enumerate(lengths)]
    alone = []
    for frames in utterances:
        stream = StreamingDecoder(decoder, max_hop=4)
        stream.push(frames)
        stream.flush()
        alone.append(pcm_of(stream.pop_audio()))
    results: dict[int, bytes] = {}
    big = 10_000  # no latent cap: exercise real multi-window batches on CPU too
    async with BatchingDecoder(decoder, max_batch=8, max_wait_ms=20, max_batch_latents=big) as batcher:

        async def one(i: int) -> None:
            tokens = aiter_of(token_ids_from_codes(utterances[i]))
            results[i] = await collect(pcm_from_tokens(tokens, batcher, max_hop=4))

        async with trio.open_nursery() as nursery:
            for i in range(len(utterances)):
                nursery.start_soon(one, i)
    for i, expected in enumerate(alone):
        got = np.frombuffer(results[i], "<i2")
        assert got.shape == expected.shape
        assert np.abs(got.astype(np.int32) - expected).max() <= 1
    assert batcher.batches_run < batcher.windows_decoded  # windows really shared batches


async def test_batcher_groups_windows_by_shape() -> None:
    p_short, p_long = planner(), planner()
    p_short.push(random_frames(2, seed=1))
    p_short.finish()
    p_long.push(random_frames(8, seed=2))
    windows = [drain(p_short)[0], drain(p_long)[0]]
    assert windows[0].shape_key != windows[1].shape_key
    async with BatchingDecoder(shared_decoder(), max_batch=4, max_wait_ms=50) as batcher:
        out: list[np.ndarray] = [np.zeros(0)] * 2
        async with trio.open_nursery() as nursery:
            for i, w in enumerate(windows):

                async def run(i: int = i, w: DecodeWindow = w) -> None:
                    out[i] = await batcher.decode_window(w)

                nursery.start_soon(run)
    assert batcher.batches_run == 2
    for w, audio in zip(windows, out, strict=True):
        alone = shared_decoder().decode_batch(w.frames[None], w.latent_start, w.latent_stop)[0]
        np.testing.assert_allclose(audio, w.keep(alone), atol=1e-5)


async def test_batcher_caps_latents_per_decode_call() -> None:
    p = planner()
    p.push(random_frames(4, seed=1))
    window = drain(p)[0]  # 14 latent steps
    async with BatchingDecoder(
        shared_decoder(), max_batch=8, max_wait_ms=50, max_batch_latents=30
    ) as batcher, trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(batcher.decode_window, window)
    assert (batcher.windows_decoded, batcher.batches_run) == (4, 2)  # 2 windows of 14 per call


async def test_batcher_sends_a_decode_error_to_the_caller_and_keeps_serving() -> None:
    bad = DecodeWindow(random_frames(1, seed=0), 0, 9, 0, 10, 0)  # latent range past the frames
    good = drain_one_window()
    async with BatchingDecoder(shared_decoder(), max_wait_ms=0) as batcher:
        with pytest.raises(ValueError, match="latent range"):
            await batcher.decode_window(bad)
        assert len(await batcher.decode_window(good)) == FRAME


def drain_one_window() -> DecodeWindow:
    p = planner()
    p.push(random_frames(1, seed=3))
    p.finish()
    return drain(p)[0]


async def test_batcher_waits_at_most_max_wait_for_company() -> None:
    async with BatchingDecoder(shared_decoder(), max_batch=64, max_wait_ms=30) as batcher:
        start = trio.current_time()
        await batcher.decode_window(drain_one_window())
        elapsed = trio.current_time() - start
    assert 0.03 <= elapsed < 5


async def test_a_lone_stream_waits_for_company_once_not_at_every_window(
    mock_clock: trio.testing.MockClock,
) -> None:
    # The first batch has no history, so it waits max_wait; it held one window,
    # so later windows go as soon as they come (a lone stream pays no wait).
    # The clock only moves when told to (or, should a wait regress, after 5
    # idle real seconds): a window that waited shows as time passed.
    mock_clock.autojump_threshold = 5.0
    window = drain_one_window()
    async with BatchingDecoder(shared_decoder(), max_batch=64, max_wait_ms=1000) as batcher:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batcher.decode_window, window)
            await trio.testing.wait_all_tasks_blocked()
            assert batcher.batches_run == 0  # gathering company, for up to 1 s
            mock_clock.jump(1.0)
        start = trio.current_time()
        for _ in range(2):
            await batcher.decode_window(window)
        assert trio.current_time() == start  # no wait at all
    assert batcher.batches_run == 3


async def test_windows_queued_while_a_batch_decodes_form_the_next_batch() -> None:
    window = drain_one_window()
    async with BatchingDecoder(shared_decoder(), max_batch=64, max_wait_ms=0) as batcher:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(batcher.decode_window, window)
    # All five were queued before the serving task ran: one batch, even with no wait.
    assert (batcher.batches_run, batcher.windows_decoded) == (1, 5)


async def test_a_cancelled_stream_leaves_the_batcher_serving_others() -> None:
    decoder = shared_decoder()
    frames = random_frames(6, seed=15)
    window = drain_one_window()
    async with BatchingDecoder(decoder, max_wait_ms=50) as batcher:
        # The batch gathers for 50 ms, so this caller is cancelled while its window waits.
        with trio.move_on_after(0.01) as scope:
            await batcher.decode_window(window)
        assert scope.cancelled_caught
        pcm = await collect(pcm_from_tokens(aiter_of(token_ids_from_codes(frames)), batcher))
    got = np.frombuffer(pcm, "<i2").astype(np.int32)
    assert np.abs(got - pcm_of(decoder.decode(frames))).max() <= 1


async def test_a_window_whose_stream_gave_up_is_not_decoded() -> None:
    async with BatchingDecoder(shared_decoder(), max_wait_ms=100) as batcher:
        with trio.move_on_after(0.01):  # gives up while the batch gathers
            await batcher.decode_window(drain_one_window())
        await trio.sleep(0.3)  # past the gathering: the batch ran, without it
    assert (batcher.batches_run, batcher.windows_decoded) == (0, 0)


async def test_streams_still_waiting_when_the_batcher_closes_get_an_error_not_a_hang() -> None:
    outcomes: list[object] = []

    async def wait_for(batcher: BatchingDecoder) -> None:
        try:
            outcomes.append(len(await batcher.decode_window(drain_one_window())))
        except RuntimeError as error:
            outcomes.append(str(error))

    closed = "the BatchingDecoder was closed before this window was decoded"
    with trio.fail_after(20):
        # One window gathering company (a long max_wait) when the block ends.
        async with trio.open_nursery() as streams:
            async with BatchingDecoder(shared_decoder(), max_wait_ms=60_000) as batcher:
                streams.start_soon(wait_for, batcher)
                await trio.testing.wait_all_tasks_blocked()
        assert outcomes == [closed]
        # One window decoding (in its thread) and one queued behind it.
        outcomes.clear()
        async with trio.open_nursery() as streams:
            async with BatchingDecoder(shared_decoder(), max_batch=1, max_wait_ms=0) as batcher:
                streams.start_soon(wait_for, batcher)
                await trio.sleep(0.001)
                streams.start_soon(wait_for, batcher)
                await trio.sleep(0.001)
        assert len(outcomes) == 2 and closed in outcomes
        assert all(o in (closed, FRAME) for o in outcomes)
    with pytest.raises(RuntimeError, match="inside 'async with'"):
        await batcher.decode_window(drain_one_window())


async def test_batcher_misuse_is_rejected() -> None:
    batcher = BatchingDecoder(shared_decoder())
    with pytest.raises(RuntimeError, match="async with"):
        await batcher.decode_window(drain_one_window())
    with pytest.raises(ValueError, match="max_batch"):
        BatchingDecoder(shared_decoder(), max_batch=0)
    with pytest.raises(ValueError, match="max_batch_latents"):
        BatchingDecoder(shared_decoder(), max_batch_latents=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchingDecoder(shared_decoder(), max_wait_ms=float("nan"))
