"""On-box synthesis: the Orpheus LLM's tokens fed straight into the SNAC decoder.

text -> :meth:`OrpheusLM.prompt_ids` -> tokens generated on a worker thread
(:class:`~.generation.ThreadedGenerator`) -> :class:`~.tokens.FrameAssembler`
(7 tokens per frame, positions checked) -> :class:`~.stream_decode.StreamPlanner`
windows -> SNAC decode (a worker thread, or a shared ``BatchingDecoder``) ->
s16le PCM pieces, streamed as soon as the decoder's look-ahead allows.

:class:`LocalSynthesizer` has the client's surface (``stream``, ``synthesize``,
``open_stream``, ``close``, ``async with``) with no server in between. A reply
cut short by ``max_tokens`` is never passed off as complete: the stream's
``finish_reason`` is ``"length"``, ``truncated`` is true, a
:class:`TruncatedSpeechWarning` is issued, and the server engine says so in a
``metrics`` frame. A reply that ends without one whole frame of audio raises
:class:`~.tokens.NoAudio`: nothing said is a failure, not an empty success.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import trio  # its exception types only: raised on either loop

from .._util.callsite import warn_at_caller
from ..errors import (
    DeadlineExceeded,
    RunawaySpeechWarning,
    ServiceError,
    TruncatedSpeechWarning,
)
from ..options import is_positive_seconds
from ..speech import SpeechSource
from ..voices import DEFAULT_FAMILY, InvalidVoiceName, UnknownVoice, VoiceCatalog, catalog_for
from .llm import (
    DEFAULT_VOICES,
    FinishReason,
    InvalidParameter,
    OrpheusLM,
    SamplingParams,
    torch_device,
)
from .hub import Piece, locate
from .read_pacing import ReadPacer
from .runaway import (
    RunawayGuard,
    RunawayLimits,
    RunawayMode,
    RunawayReason,
    audio_budget_s,
    checked_mode,
    derived_max_tokens,
)
from .snac_decoder import SnacDecoder, float_to_pcm16
from .stream_decode import Audio, DecodeWindow, StreamPlanner, WindowDecoder
from .token_source import Prompt, TokenModel, TokenStream
from ..voices.library import CustomVoice, VoiceFileError, VoiceLibrary, VoiceNotFound
from .tokens import TOKENS_PER_FRAME, FrameAssembler, NoAudio, OnInvalid

__all__ = [
    "DEFAULT_VOICES",
    "LocalAudioStream",
    "LocalOptions",
    "LocalSynthesizer",
    "TruncatedSpeechWarning",
]


_CLOSED_WHILE_READING = "the audio stream was closed by another task"


class _Late(Exception):
    """The stream's deadline passed during a read (raised as DeadlineExceeded)."""


class LocalAudioStream:
    """One utterance being synthesized: ``async for pcm in stream`` yields PCM bytes.

    After the stream ends: ``finish_reason`` (``"stop"``, ``"length"``, ``"runaway"``
    (the runaway guard ended it: :attr:`runaway` says why), or ``"cancelled"`` when
    closed early), ``truncated``, ``tokens`` generated, ``frames`` and ``samples``
    decoded, ``ttfb_s`` (time to first audio).
    """

    def __init__(
        self,
        synthesizer: LocalSynthesizer,
        prompt_ids: Prompt,
        params: SamplingParams,
        *,
        deadline: float,
        guard: RunawayGuard | None = None,
        runaway_mode: RunawayMode = "warn",
    ) -> None:
        self._tokens = synthesizer.lm.open_tokens(prompt_ids, params)
        self._deadline = deadline
        self._started = anyio.current_time()
        self._progress = _Progress()
        self._runaway_mode = runaway_mode
        # No reference back to this stream: a stream dropped without aclose() is
        # freed at once, and Trio's finalizer closes the generator, which stops the thread.
        self._pcm = _decode(
            self._tokens, synthesizer, self._progress, params.max_tokens, guard
        )
        self._closed = False
        self._reading = False
        self.prompt_tokens = len(prompt_ids)
        self.samples = 0
        self.ttfb_s: float | None = None
        self.elapsed_s: float | None = None

    @property
    def tokens(self) -> int:
        """Tokens generated so far (the stop token not counted)."""
        return self._tokens.items

    @property
    def finish_reason(self) -> FinishReason | None:
        """``"stop"``, ``"length"``, ``"cancelled"``; ``None`` while running."""
        return self._progress.finish_reason

    @property
    def frames(self) -> int:
        """Frames decoded so far."""
        return self._progress.frames

    @property
    def dropped_tokens(self) -> int:
        """Tokens of frames not decoded: a partial frame a cut left, frames dropped by resync."""
        return self._progress.dropped_tokens

    @property
    def truncated(self) -> bool:
        """Whether ``max_tokens`` cut the reply short."""
        return self.finish_reason == "length"

    @property
    def runaway(self) -> RunawayReason | None:
        """Why the runaway guard ended the speech (``"loop"``, ``"too_long"``), if it did."""
        return self._progress.runaway

    def __aiter__(self) -> LocalAudioStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        if self._reading:
            raise trio.BusyResourceError("another task is reading this audio stream")
        self._reading = True
        try:
            try:
                pcm: bytes | None = None
                with anyio.CancelScope(deadline=self._deadline):
                    pcm = await self._pcm.__anext__()
                if pcm is None:  # the deadline cancelled the read
                    raise _Late
            finally:
                self._reading = False
        except StopAsyncIteration:
            closed_by_another_task = self._closed
            await self.aclose()
            if closed_by_another_task:
                raise trio.ClosedResourceError(_CLOSED_WHILE_READING) from None
            if self.truncated:  # here, so the warning shows at the caller's line
                warn_at_caller(
                    f"max_tokens ({self.tokens}) reached before end of speech: "
                    "the audio is cut short",
                    TruncatedSpeechWarning,
                )
            if self.runaway is not None:
                message = runaway_message(self.runaway, self.samples)
                if self._runaway_mode == "error":
                    raise ServiceError("engine_error", message) from None
                warn_at_caller(message, RunawaySpeechWarning)
            raise
        except _Late:
            await self.aclose()
            raise DeadlineExceeded(
                f"local synthesis deadline passed after {self.samples} samples"
            ) from None
        except BaseException:
            await self.aclose()
            raise
        if self._closed:  # by another task, while this one decoded
            await self._pcm.aclose()
            raise trio.ClosedResourceError(_CLOSED_WHILE_READING)
        if self.ttfb_s is None:
            self.ttfb_s = anyio.current_time() - self._started
        self.samples += len(pcm) // 2
        return pcm

    async def aclose(self) -> None:
        """Stop generation and decoding now (idempotent); waits for the worker thread.

        Another task reading the stream meanwhile gets ``trio.ClosedResourceError``.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if not self._reading:  # else the reader closes the generator when it wakes
                await self._pcm.aclose()
        finally:
            await self._tokens.aclose()
            self.elapsed_s = anyio.current_time() - self._started
            if self._progress.finish_reason is None:
                self._progress.finish_reason = self._tokens.result or "cancelled"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass
class _Progress:
    """What a stream's decoding generator reports back to the stream."""

    frames: int = 0
    dropped_tokens: int = 0
    finish_reason: FinishReason | None = None
    runaway: RunawayReason | None = None


def runaway_message(reason: RunawayReason, samples: int) -> str:
    """What the caller is told when the runaway guard ended a piece."""
    what = (
        "its frames repeated (a loop)"
        if reason == "loop"
        else "it ran far past what its text needs"
    )
    return (
        f"the speech was ended after {samples / 24_000:.1f} s: {what}; "
        "the model ran away (param runaway='off' turns the guard off)"
    )

async def _decode(
    tokens: TokenStream,
    synthesizer: LocalSynthesizer,
    progress: _Progress,
    max_tokens: int,
    guard: RunawayGuard | None,
) -> AsyncGenerator[bytes, None]:
    """PCM pieces for the tokens as they come; closing it stops the token thread.

    When ``guard`` finds the speech running away, reading stops (the token
    source is closed: an engine's stream ends at once) and the frames so far are
    decoded to the end.
    """
    try:
        assembler = FrameAssembler(on_invalid=synthesizer.on_invalid)
        planner = StreamPlanner.for_decoder(
            synthesizer.snac,
            first_hop=synthesizer.first_hop,
            max_hop=synthesizer.max_hop,
        )
        # An engine's socket holds unread tokens for free: read them in bigger pieces.
        pacer = ReadPacer() if tokens.reads_can_wait else None
        first_audio_at: float | None = None
        async for token in tokens:
            if pacer is not None:
                pacer.arrived(anyio.current_time(), tokens.items)
            if isinstance(token, str):
                frames = assembler.feed_text(token)
            elif isinstance(token, int):
                frames = assembler.feed_id(token)
            else:
                frames = assembler.feed_ids(token)
            if len(frames):
                if guard is not None:
                    seen = guard.frames
                    if guard.feed(frames) is not None:
                        # One read may bring many frames: keep those up to the verdict.
                        planner.push(frames[: guard.frames - seen])
                        progress.runaway = guard.reason
                        break
                planner.push(frames)
                while (window := planner.next_window()) is not None:
                    pcm = await _decode_window(synthesizer, window, progress)
                    if first_audio_at is None:
                        first_audio_at = anyio.current_time()
                    yield pcm
            if pacer is not None:
                now = anyio.current_time()
                # The next audio needs the window's missing tokens, or the reply's end at max_tokens.
                wanted = TOKENS_PER_FRAME * planner.frames_wanted() - assembler.pending_tokens
                audio_left = None if first_audio_at is None else planner.audio_left_s(now, first_audio_at)
                wait = pacer.wait_s(now, min(wanted, max_tokens - tokens.items), audio_left)
                if wait > 0:
                    await anyio.sleep(wait)
        reason: FinishReason | None = "runaway" if progress.runaway else tokens.result
        if reason is None:
            return  # the stream was closed while this waited for a token
        if reason in ("length", "runaway"):
            # The cut may fall inside a frame: keep the whole frames, say what was dropped.
            # (LocalAudioStream warns once the audio is out.)
            progress.dropped_tokens = assembler.pending_tokens
        else:
            assembler.close()  # a reply that stopped inside a frame is an error here
        progress.dropped_tokens += assembler.dropped_tokens
        if assembler.frames_out == 0:
            raise NoAudio(reason, tokens.items)
        progress.finish_reason = reason
        planner.finish()
        while (window := planner.next_window()) is not None:
            yield await _decode_window(synthesizer, window, progress)
    finally:
        await tokens.aclose()


async def _decode_window(
    synthesizer: LocalSynthesizer, window: DecodeWindow, progress: _Progress
) -> bytes:
    decoder = synthesizer.decoder
    audio: Audio
    if isinstance(decoder, SnacDecoder):
        batch = await anyio.to_thread.run_sync(
            decoder.decode_batch,
            window.frames[None],
            window.latent_start,
            window.latent_stop,
        )
        audio = window.keep(batch[0])
    else:
        audio = await decoder.decode_window(window)
    progress.frames += len(audio) // synthesizer.snac.frame_samples
    return float_to_pcm16(audio)


@dataclass(frozen=True)
class LocalOptions:
    """A :class:`LocalSynthesizer`'s settings (its defaults, written once), checked
    when made: at construction, never per request."""

    voices: Collection[str] | None = DEFAULT_VOICES
    defaults: Mapping[str, Any] | None = None
    timeout_s: float | None = None
    on_invalid: OnInvalid = "error"
    first_hop: int = 1
    max_hop: int = 16

    def __post_init__(self) -> None:
        voices, first_hop, max_hop = self.voices, self.first_hop, self.max_hop
        if isinstance(voices, str):
            raise TypeError(
                f"voices must be a collection of names, not a str (e.g. [{voices!r}])"
            )
        if voices is not None and not all(isinstance(v, str) and v for v in voices):
            raise ValueError(f"voices must be non-empty strings, got {voices!r}")
        if self.timeout_s is not None and not is_positive_seconds(self.timeout_s):
            raise ValueError(
                f"timeout_s must be a positive number or None, got {self.timeout_s!r}"
            )
        if self.on_invalid not in ("error", "resync"):
            raise ValueError(
                f"on_invalid must be 'error' or 'resync', got {self.on_invalid!r}"
            )
        if (
            isinstance(first_hop, bool)
            or not isinstance(first_hop, int)
            or not isinstance(max_hop, int)
            or not 1 <= first_hop <= max_hop
        ):
            raise ValueError(
                f"need 1 <= first_hop <= max_hop, got {first_hop!r}, {max_hop!r}"
            )
        defaults = dict(self.defaults or {})
        checked_mode(defaults.pop("runaway", "warn"))
        SamplingParams.from_params(defaults)


class LocalSynthesizer(SpeechSource):
    """Orpheus speech made on this machine, with the client's ``stream``/``synthesize`` API.

    ``lm``: the loaded :class:`OrpheusLM`, or a :class:`~.remote.RemoteLM` (an
    inference engine's completions endpoint; any :class:`~.token_source.TokenModel`). ``decoder``: a :class:`SnacDecoder`
    (windows decoded in worker threads) or a running ``BatchingDecoder`` shared
    by many streams. ``voices``: names accepted (``None``: any name); a request
    without a voice speaks the text alone. ``defaults``: sampling parameters
    applied to every request (request parameters win). ``on_invalid``: what a
    token out of place does (``"error"`` raises, ``"resync"`` drops its frame).
    """

    def __init__(
        self,
        lm: TokenModel,
        decoder: SnacDecoder | WindowDecoder,
        *,
        voices: Collection[str] | None = LocalOptions.voices,
        defaults: Mapping[str, Any] | None = LocalOptions.defaults,
        timeout_s: float | None = LocalOptions.timeout_s,
        on_invalid: OnInvalid = LocalOptions.on_invalid,
        first_hop: int = LocalOptions.first_hop,
        max_hop: int = LocalOptions.max_hop,
        voice_library: VoiceLibrary | None = None,
        can_clone: bool = False,
    ) -> None:
        snac = (
            decoder
            if isinstance(decoder, SnacDecoder)
            else getattr(decoder, "decoder", None)
        )
        if not isinstance(snac, SnacDecoder):
            raise TypeError(
                "decoder must be a SnacDecoder or a BatchingDecoder wrapping one"
            )
        LocalOptions(voices, defaults, timeout_s, on_invalid, first_hop, max_hop)
        self.lm = lm
        self.decoder = decoder
        self.snac = snac
        self.voices = tuple(voices) if voices is not None else None
        #: Aliases (OpenAI's ``alloy``) are accepted too: names alone are read as the
        #: English fine-tune's (a name outside the voice-name grammar gets no aliases).
        self.catalog = _catalog_of(voices)
        self.defaults = dict(defaults or {})
        self.timeout_s = timeout_s
        self.on_invalid: OnInvalid = on_invalid
        self.first_hop = first_hop
        self.max_hop = max_hop
        #: Custom (cloned) voices, usable when the checkpoint clones (the pretrained one).
        self.voice_library = voice_library
        self.can_clone = can_clone

    @staticmethod
    def check_options(**options: Any) -> None:
        """Raise ``ValueError``/``TypeError`` for bad options (the constructor's keyword
        arguments): at construction and in :meth:`load` before loading anything."""
        LocalOptions(**options)

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str] | None,
        snac: str | os.PathLike[str],
        *,
        device: str | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        dtype: str | None = None,
        local_files_only: bool = False,
        llm_url: str | None = None,
        llm_model: str | None = None,
        llm_api_key: str | None = None,
        **options: Any,
    ) -> LocalSynthesizer:
        """Load the Orpheus checkpoint ``model`` and the SNAC checkpoint ``snac``
        (local directories or hub ids) onto ``device`` (CUDA when present, else CPU).
        ``options`` are :class:`LocalSynthesizer` keyword arguments, checked
        before loading. Blocks while loading.

        With ``llm_url`` (an OpenAI-compatible server: vLLM, SGLang, llama.cpp's
        ``llama-server``) the tokens come from that engine instead and ``model``
        must be ``None``; ``llm_model`` names the engine's model, ``llm_api_key``
        its key, and ``tokenizer`` (optional) sends the prompt as token ids.
        """
        voices_dir = options.pop("voices_dir", None)
        can_clone = bool(options.pop("can_clone", False))
        cls.check_options(**options)
        if llm_url is not None and model is not None:
            raise ValueError("give model (on-box LLM) or llm_url (an engine), not both")
        if llm_url is None and model is None:
            raise ValueError("give model (an Orpheus checkpoint) or llm_url (an engine)")
        # Every piece looked at before anything loads (torch included): all that is
        # missing is named at once.
        pieces = [Piece("SNAC decoder", snac)]
        if model is not None:
            pieces.append(Piece("Orpheus model", model))
        if tokenizer is not None:
            pieces.append(Piece("tokenizer", tokenizer, marker="tokenizer_config.json"))
        local_files_only = locate(pieces) or local_files_only
        device = torch_device(device)
        # SNAC first: it loads in a moment, so a bad SNAC path fails before the LLM's minutes.
        decoder = SnacDecoder.from_pretrained(snac, device=device, local_files_only=local_files_only)
        library = None
        if voices_dir is not None:
            from .snac_encoder import snac_fingerprint_of

            library = VoiceLibrary(voices_dir, snac=snac_fingerprint_of(snac))
        lm: TokenModel
        if llm_url is not None:
            from .engine_client import RemoteLM

            lm = RemoteLM(
                llm_url,
                model=llm_model,
                api_key=llm_api_key,
                tokenizer=tokenizer,
                local_files_only=local_files_only,
            )
        else:
            assert model is not None
            lm = OrpheusLM.load(
                model,
                tokenizer=tokenizer,
                device=device,
                dtype=dtype,
                local_files_only=local_files_only,
            )
        return cls(lm, decoder, voice_library=library, can_clone=can_clone, **options)

    def validate(self, voice: str | None, params: Mapping[str, Any]) -> SamplingParams:
        """Check a voice and request parameters (defaults applied); raises :class:`InvalidParameter`.

        ``runaway`` (``"warn"``, ``"error"`` or ``"off"``) is the runaway guard's mode,
        checked here and left out of the sampling parameters. A custom (cloned)
        voice of the library is checked by :meth:`custom_voice`.
        """
        if self.custom_voice(voice) is not None:
            pass
        elif self.catalog is not None:
            try:
                self.catalog.resolve(voice)
            except UnknownVoice as error:
                raise InvalidParameter("voice", str(error)) from None
        elif voice is not None and self.voices is not None and voice not in self.voices:
            raise InvalidParameter(
                "voice", f"unknown voice {voice!r} (known: {', '.join(self.voices)})"
            )
        sampling = {**self.defaults, **params}
        self._runaway_mode(sampling.pop("runaway", "warn"))
        return self.lm.params_type.from_params(sampling)

    @staticmethod
    def _runaway_mode(value: object) -> RunawayMode:
        try:
            return checked_mode(value)
        except ValueError as error:
            raise InvalidParameter("runaway", str(error)) from None

    def custom_voice(self, voice: str | None) -> CustomVoice | None:
        """The library's voice ``voice`` (``None``: not a custom voice here).

        :class:`InvalidParameter` (``voice``) when it is one but cannot be used:
        this checkpoint does not clone, or its file is damaged or was encoded
        with another SNAC checkpoint.
        """
        if voice is None or self.voice_library is None:
            return None
        if self.voices is not None and voice in self.voices:
            return None  # a stock voice's name is never shadowed
        if voice not in self.voice_library:
            return None
        if not self.can_clone:
            raise InvalidParameter(
                "voice",
                f"{voice!r} is a custom (cloned) voice and this model cannot clone: cloning "
                "needs the pretrained checkpoint (canopylabs/orpheus-3b-0.1-pretrained) "
                "served with --can-clone",
            )
        try:
            return self.voice_library.get(voice)
        except VoiceNotFound:  # removed since the check above
            return None
        except VoiceFileError as error:
            raise InvalidParameter("voice", str(error)) from None

    def open(
        self,
        text: str,
        voice: str | None = None,
        *,
        timeout_s: float | None = None,
        **params: Any,
    ) -> LocalAudioStream:
        """Start one utterance; iterate the returned stream and close it (``async with``).

        Bad input raises here, before any work: :class:`InvalidParameter` for a
        parameter or voice, ``ValueError`` for empty text.
        """
        sampling = self.validate(voice, params)
        custom = self.custom_voice(voice)
        if custom is None and self.catalog is not None and voice is not None:
            resolved = self.catalog.resolve(voice)  # an alias: the voice it stands for
            voice = resolved.name if resolved is not None else voice
        limit = timeout_s if timeout_s is not None else self.timeout_s
        if limit is not None and not is_positive_seconds(limit):
            raise InvalidParameter(
                "timeout_s", f"must be a positive number, got {limit!r}"
            )
        given = {**self.defaults, **params}
        mode = self._runaway_mode(given.get("runaway", "warn"))
        guard = None
        if mode != "off":
            # No max_tokens asked for: the text's own budget bounds the engine's work too.
            if "max_tokens" not in given:
                ceiling = sampling.max_tokens
                sampling = dataclasses.replace(
                    sampling, max_tokens=derived_max_tokens(text, ceiling=ceiling)
                )
            guard = RunawayGuard(RunawayLimits(budget_s=audio_budget_s(text)))
        if custom is not None:
            from .cloning import cloning_prompt

            prompt = cloning_prompt(self.lm, text, custom)
        else:
            prompt = self.lm.prompt_ids(text, voice)
        self.lm.check_fits(len(prompt), sampling)
        deadline = anyio.current_time() + limit if limit is not None else math.inf
        return LocalAudioStream(
            self, prompt, sampling, deadline=deadline, guard=guard, runaway_mode=mode
        )

    @asynccontextmanager
    async def open_stream(
        self,
        text: str,
        voice: str | None = None,
        *,
        timeout_s: float | None = None,
        **params: Any,
    ) -> AsyncIterator[LocalAudioStream]:
        """Like the client's ``open_stream``: the utterance's stream, closed on exit."""
        audio = self.open(text, voice, timeout_s=timeout_s, **params)
        try:
            yield audio
        finally:
            await audio.aclose()

    async def close(self) -> None:
        """Close the token model's connections (an engine's); a local model holds none."""
        await self.lm.aclose()

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _catalog_of(voices: Collection[str] | None) -> VoiceCatalog | None:
    if voices is None or isinstance(voices, VoiceCatalog):
        return voices
    try:
        return catalog_for(DEFAULT_FAMILY, voices=list(voices))
    except InvalidVoiceName:
        return None
