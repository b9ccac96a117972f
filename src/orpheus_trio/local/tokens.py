"""Orpheus audio tokens to SNAC codes: parsing, position checks, de-interleaving.

Orpheus writes each 85.3 ms SNAC frame as 7 tokens. The token at position k
(0..6) of a frame carries code ``id - 128266 - k*4096`` (token ids) or
``N - 10 - k*4096`` (the text form ``<custom_token_N>``, whose id is
``128256 + N``). Valid codes are 0..4095, so every position owns a disjoint
band of 4096 ids: a token's id says which position it belongs to. That is
what lets :class:`FrameAssembler` notice a dropped or stray token instead of
silently shifting every later token by one position, as the widely used
reference decoder does.

Policy for bad tokens (``on_invalid``):

``"error"`` (default)
    Any token that is not the audio token expected at the current position
    (out of band, a text fragment, a control token inside a frame) raises
    :class:`InvalidAudioToken` naming the token's index in the stream, the
    frame and the position.
``"resync"``
    The partial frame is dropped (counted in ``dropped_frames`` and
    ``dropped_tokens``); assembly restarts at the next position-0 token. Later
    frames keep their exact positions, so they decode exactly as they would
    have without the damage; the utterance only loses the damaged frames.

Control tokens (start/end of speech, end of turn) between frames are skipped
in both modes; inside a frame they are bad tokens like any other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..errors import OrpheusError

__all__ = [
    "AUDIO_TOKEN_BASE",
    "CODEBOOK_SIZE",
    "CONTROL_TOKEN_IDS",
    "CUSTOM_TOKEN_ID_OFFSET",
    "FRAME_SAMPLES",
    "TOKENS_PER_FRAME",
    "FrameAssembler",
    "IncompleteFrame",
    "InvalidAudioToken",
    "NoAudio",
    "OnInvalid",
    "code_from_token_id",
    "codes_from_token_ids",
    "deinterleave",
    "parse_custom_tokens",
    "token_ids_from_codes",
]

#: Id of the first audio token (position 0, code 0).
AUDIO_TOKEN_BASE = 128266
#: ``<custom_token_N>`` has token id ``CUSTOM_TOKEN_ID_OFFSET + N``.
CUSTOM_TOKEN_ID_OFFSET = 128256
CODEBOOK_SIZE = 4096
TOKENS_PER_FRAME = 7
#: Audio samples per frame at 24 kHz (one codebook-0 code).
FRAME_SAMPLES = 2048
#: start of speech, end of speech, end of turn: skipped between frames.
CONTROL_TOKEN_IDS = frozenset({128257, 128258, 128009})

_AUDIO_TOKEN_END = AUDIO_TOKEN_BASE + TOKENS_PER_FRAME * CODEBOOK_SIZE
_CUSTOM_TOKEN = re.compile(r"<custom_token_(\d+)>")
#: What the end of a text piece looks like when a token is split across pieces.
_PARTIAL_CUSTOM_TOKEN = re.compile(r"<(c(u(s(t(o(m(_(t(o(k(e(n(_\d*)?)?)?)?)?)?)?)?)?)?)?)?)?")

OnInvalid = Literal["error", "resync"]
CodeFrames = npt.NDArray[np.int64]


class InvalidAudioToken(OrpheusError, ValueError):
    """A token is not the audio token expected at its position in its frame."""

    def __init__(self, reason: str, *, token: int | str, index: int, frame: int, position: int) -> None:
        self.reason = reason
        self.token = token
        self.index = index
        self.frame = frame
        self.position = position
        super().__init__(f"token {index} ({token!r}), frame {frame} position {position}: {reason}")


class IncompleteFrame(OrpheusError, ValueError):
    """The token stream ended inside a frame."""

    def __init__(self, frame: int, tokens: int) -> None:
        self.frame = frame
        self.tokens = tokens
        super().__init__(f"stream ended inside frame {frame}: {tokens} of {TOKENS_PER_FRAME} tokens")


class NoAudio(OrpheusError, ValueError):
    """The reply ended without one whole audio frame: an empty utterance is a failure,
    never a success with nothing in it."""

    def __init__(self, finish_reason: str, tokens: int) -> None:
        self.finish_reason = finish_reason
        self.tokens = tokens
        super().__init__(
            f"the model's reply held no audio ({tokens} tokens, finish_reason {finish_reason!r})"
        )


def code_from_token_id(token_id: int, position: int) -> int:
    """The SNAC code of ``token_id`` at ``position`` (0..6) of a frame; -1 when out of band."""
    code = token_id - AUDIO_TOKEN_BASE - position * CODEBOOK_SIZE
    return code if 0 <= code < CODEBOOK_SIZE else -1


def _position_of(token_id: int) -> int:
    """The frame position whose band holds ``token_id``; -1 for non-audio ids."""
    if AUDIO_TOKEN_BASE <= token_id < _AUDIO_TOKEN_END:
        return (token_id - AUDIO_TOKEN_BASE) // CODEBOOK_SIZE
    return -1


def parse_custom_tokens(text: str) -> list[int]:
    """Token ids of every ``<custom_token_N>`` in ``text`` (whitespace between them is fine).

    Raises :class:`InvalidAudioToken` for any other text, naming where it is.
    """
    ids: list[int] = []
    pos = 0
    for match in _CUSTOM_TOKEN.finditer(text):
        _reject_stray_text(text[pos : match.start()], len(ids))
        ids.append(CUSTOM_TOKEN_ID_OFFSET + int(match.group(1)))
        pos = match.end()
    _reject_stray_text(text[pos:], len(ids))
    return ids


def _reject_stray_text(gap: str, index: int) -> None:
    if gap.strip():
        raise InvalidAudioToken(
            "text that is not a <custom_token_N>",
            token=gap.strip()[:40],
            index=index,
            frame=index // TOKENS_PER_FRAME,
            position=index % TOKENS_PER_FRAME,
        )


def codes_from_token_ids(token_ids: Iterable[int], *, on_invalid: OnInvalid = "error") -> CodeFrames:
    """Complete frames of a whole token sequence, shape ``(n_frames, 7)``, codes 0..4095.

    A trailing partial frame raises :class:`IncompleteFrame` (``"error"``) or is
    dropped (``"resync"``).
    """
    assembler = FrameAssembler(on_invalid=on_invalid)
    frames = assembler.feed_ids(token_ids)
    assembler.close()
    return frames


def token_ids_from_codes(frames: npt.ArrayLike) -> list[int]:
    """The inverse of :func:`codes_from_token_ids` (used to build test streams)."""
    array = _as_frames(frames)
    ids = array + AUDIO_TOKEN_BASE + CODEBOOK_SIZE * np.arange(TOKENS_PER_FRAME)
    return [int(i) for i in ids.reshape(-1)]


def deinterleave(frames: npt.ArrayLike) -> tuple[CodeFrames, CodeFrames, CodeFrames]:
    """Split ``(n, 7)`` frames into SNAC's codebooks: ``(n,)``, ``(2n,)``, ``(4n,)``.

    Position 0 -> codebook 0; 1, 4 -> codebook 1; 2, 3, 5, 6 -> codebook 2,
    each in time order.
    """
    array = _as_frames(frames)
    return (
        np.ascontiguousarray(array[:, 0]),
        np.ascontiguousarray(array[:, [1, 4]].reshape(-1)),
        np.ascontiguousarray(array[:, [2, 3, 5, 6]].reshape(-1)),
    )


def _as_frames(frames: npt.ArrayLike) -> CodeFrames:
    array = np.asarray(frames, dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != TOKENS_PER_FRAME:
        raise ValueError(f"frames must have shape (n, {TOKENS_PER_FRAME}), got {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= CODEBOOK_SIZE):
        raise ValueError(f"codes must be in 0..{CODEBOOK_SIZE - 1}")
    return array


_NO_FRAMES: CodeFrames = np.zeros((0, TOKENS_PER_FRAME), dtype=np.int64)
_NO_FRAMES.flags.writeable = False


def _frames_array(frames: list[list[int]]) -> CodeFrames:
    return np.array(frames, dtype=np.int64) if frames else _NO_FRAMES


class FrameAssembler:
    """Sans-IO: audio tokens in (ids or ``<custom_token_N>`` text), complete frames out.

    Feed tokens as they are generated; each ``feed_*`` call returns the frames
    it completed as an ``(n, 7)`` code array (often empty; an empty result is
    shared and read-only). Call :meth:`close` at the end of the stream. See
    the module docstring for ``on_invalid``.
    """

    def __init__(self, *, on_invalid: OnInvalid = "error") -> None:
        if on_invalid not in ("error", "resync"):
            raise ValueError(f"on_invalid must be 'error' or 'resync', got {on_invalid!r}")
        self.on_invalid: OnInvalid = on_invalid
        self.frames_out = 0
        self.dropped_frames = 0
        self.dropped_tokens = 0
        self._tokens_in = 0
        self._partial: list[int] = []
        self._text_tail = ""
        self._closed = False

    def feed_ids(self, token_ids: Iterable[int]) -> CodeFrames:
        """Feed token ids; returns the frames they completed."""
        done: list[list[int]] = []
        for token_id in token_ids:
            frame = self._feed_one(int(token_id), token_id)
            if frame is not None:
                done.append(frame)
        return _frames_array(done)

    def feed_id(self, token_id: int) -> CodeFrames:
        """Feed one token id; returns the frame it completed, if any."""
        # Called once per generated token: six calls in seven complete nothing
        # and share one empty (read-only) array instead of building one each.
        frame = self._feed_one(int(token_id), token_id)
        return _NO_FRAMES if frame is None else np.array([frame], dtype=np.int64)

    def feed_text(self, text: str) -> CodeFrames:
        """Feed detokenized text; a ``<custom_token_N>`` split across calls is buffered."""
        if not self._text_tail and (whole := _CUSTOM_TOKEN.fullmatch(text)) is not None:
            # An engine streams one token per piece: the general scan below, at a third of the cost.
            frame = self._feed_one(CUSTOM_TOKEN_ID_OFFSET + int(whole.group(1)), text)
            return _NO_FRAMES if frame is None else np.array([frame], dtype=np.int64)
        buffer = self._text_tail + text
        cut = buffer.rfind("<")
        if cut != -1 and _PARTIAL_CUSTOM_TOKEN.fullmatch(buffer[cut:]):
            # The tail may be the start of a token that the next piece completes.
            buffer, self._text_tail = buffer[:cut], buffer[cut:]
        else:
            self._text_tail = ""
        done: list[list[int]] = []
        pos = 0
        for match in _CUSTOM_TOKEN.finditer(buffer):
            self._feed_stray_text(buffer[pos : match.start()])
            token_id = CUSTOM_TOKEN_ID_OFFSET + int(match.group(1))
            frame = self._feed_one(token_id, match.group(0))
            if frame is not None:
                done.append(frame)
            pos = match.end()
        self._feed_stray_text(buffer[pos:])
        return _frames_array(done)

    def close(self) -> None:
        """End of stream: a partial frame raises :class:`IncompleteFrame` or is dropped."""
        if self._closed:
            return
        self._closed = True
        tail = self._text_tail
        self._text_tail = ""
        self._feed_stray_text(tail)
        if self._partial:
            if self.on_invalid == "error":
                raise IncompleteFrame(self.frames_out, len(self._partial))
            self._drop_partial()

    @property
    def pending_tokens(self) -> int:
        """Tokens of the frame now being assembled."""
        return len(self._partial)

    def _feed_stray_text(self, gap: str) -> None:
        if gap.strip():
            index = self._tokens_in
            self._tokens_in += 1
            self._bad(gap.strip()[:40], index, "text that is not a <custom_token_N>")

    def _feed_one(self, token_id: int, shown: int | str) -> list[int] | None:
        if self._closed:
            raise RuntimeError("FrameAssembler is closed")
        index = self._tokens_in
        self._tokens_in += 1
        position = len(self._partial)
        if position == 0 and token_id in CONTROL_TOKEN_IDS:
            return None
        band = _position_of(token_id)
        if band != position:
            if band == -1:
                reason = "not an audio token"
            else:
                reason = f"audio token of position {band}, expected position {position}"
            self._bad(shown, index, reason, keep_token=band == 0)
            if band == 0:
                # Resync: a position-0 token starts the next frame.
                self._partial.append(token_id - AUDIO_TOKEN_BASE)
            return None
        self._partial.append(token_id - AUDIO_TOKEN_BASE - position * CODEBOOK_SIZE)
        if len(self._partial) < TOKENS_PER_FRAME:
            return None
        frame, self._partial = self._partial, []
        self.frames_out += 1
        return frame

    def _bad(self, shown: int | str, index: int, reason: str, *, keep_token: bool = False) -> None:
        if self.on_invalid == "error":
            raise InvalidAudioToken(
                reason, token=shown, index=index, frame=self.frames_out, position=len(self._partial)
            )
        if not keep_token:
            self.dropped_tokens += 1
        if self._partial:
            self._drop_partial()

    def _drop_partial(self) -> None:
        self.dropped_tokens += len(self._partial)
        self.dropped_frames += 1
        self._partial = []
