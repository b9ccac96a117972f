"""Real speech without a GPU or downloads: espeak-ng (bundled by ``espeakng-loader``) via ctypes.

Text is split into sentences (packed up to ``_PIECE_CHARS``); each is
synthesized in a worker thread at espeak's 22 050 Hz, resampled to 24 000 Hz
by one ``soxr`` stream per request (so sentence joins stay smooth), and
streamed as soon as it is made: the first audio comes after the first
sentence, not the whole text. Cancellation is honoured between sentences.

espeak-ng's C API keeps global state (one voice, one callback) and is not
thread-safe, so every call into it holds one process-wide lock.

Parameters: ``rate`` (words per minute, 80..450, default 175), ``pitch``
(0..100, default 50); Orpheus sampling parameters are checked and ignored.
Voices: every stock Orpheus voice name (the English fine-tune's and the
multilingual release's: ``pierre``, ``유나``, ``长乐``...) mapped onto an espeak
voice of the same language + a variant of the voice's gender (``VOICE_MAP``),
so the embedded demo speaks French, German, Korean, Hindi, Mandarin, Spanish
and Italian with the names a real worker uses; the catalog
(:func:`orpheus_trio.voices.espeak_family`) says each one's language.
``voices`` picks and orders the names served (the first is the default).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import espeakng_loader
import numpy as np
import soxr
import trio

from ...audio.pcm import SAMPLE_RATE
from ...text.split import split_text
from ...voices import VoiceCatalog, catalog_for, espeak_family
from ..engine import (
    SAMPLING_PARAMS,
    InvalidParam,
    Piece,
    require_int,
    shown_value,
    unknown_param,
    validate_sampling_param,
)

__all__ = ["ESPEAK_LANGUAGES", "ESPEAK_RATE", "OUTPUT_RATE", "VOICE_MAP", "EspeakEngine"]

ESPEAK_RATE = 22_050
OUTPUT_RATE = SAMPLE_RATE
#: Orpheus voice name -> espeak voice (language + variant).
VOICE_MAP = {
    "tara": "en-us+f3",
    "leah": "en+f2",
    "jess": "en-us+f4",
    "leo": "en-us+m3",
    "dan": "en+m1",
    "mia": "en-us+f1",
    "zac": "en-us+m7",
    "zoe": "en+f5",
}
#: The catalog's language -> espeak-ng's voice for it (Mandarin is ``cmn``).
ESPEAK_LANGUAGES = {
    "en": "en", "fr": "fr", "de": "de", "ko": "ko", "hi": "hi", "zh": "cmn", "es": "es",
    "it": "it",
}  # fmt: skip


def _variants() -> dict[str, str]:
    """The other languages' voices: their espeak language + a variant by gender, in turn."""
    taken: dict[tuple[str, str], int] = {}
    variants: dict[str, str] = {}
    for voice in espeak_family().voices:
        if voice.name in VOICE_MAP:
            continue
        kind = "m" if voice.gender == "male" else "f"
        index = taken.get((voice.language, kind), 0)
        taken[voice.language, kind] = index + 1
        variants[voice.name] = f"{ESPEAK_LANGUAGES[voice.language]}+{kind}{index % 4 + 2}"
    return variants


VOICE_MAP.update(_variants())
#: Longest text synthesized in one call; shorter pieces give earlier first audio.
_PIECE_CHARS = 160
#: Largest chunk streamed (0.5 s of audio) so lines stay small.
_MAX_CHUNK_SAMPLES = 12_000

# espeak-ng constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """The process's one espeak-ng instance; every method must run under ``lock``."""

    lock = threading.Lock()
    _instance: _Espeak | None = None
    _starting = threading.Lock()

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"espeak-ng failed to start (returned {rate})")
        self._lib = lib
        self._parts: list[bytes] = []
        # Kept on self: ctypes callbacks must outlive every call that may use them.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Espeak:
        with cls._starting:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self._parts.append(ctypes.string_at(wav, count * 2))
        return 0

    def set_voice(self, name: str) -> bool:
        return int(self._lib.espeak_SetVoiceByName(name.encode())) == _EE_OK

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> bytes:
        """PCM s16le at 22 050 Hz for ``text``."""
        if not self.set_voice(voice):
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self._lib.espeak_SetParameter(_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PITCH, pitch, 0)
        encoded = text.encode()
        self._parts = []
        status = self._lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({status})")
        pcm = b"".join(self._parts)
        self._parts = []
        return pcm


def _locked(function: Callable[[], bytes]) -> bytes:
    with _Espeak.lock:
        return function()


class EspeakEngine:
    """espeak-ng speech at 24 kHz, streamed sentence by sentence."""

    name = "espeak"

    def __init__(
        self,
        voices: Sequence[str] | None = None,
        *,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        """``voices``: the names served, in order (default: all of :data:`VOICE_MAP`);
        ``aliases`` override the default OpenAI alias table."""
        unknown = [v for v in voices or () if v not in VOICE_MAP]
        if unknown:
            raise ValueError(
                f"espeak has no voice {', '.join(map(repr, unknown))}; "
                f"it has: {', '.join(VOICE_MAP)}"
            )
        self._catalog = catalog_for("espeak", voices=voices, aliases=aliases)
        self._espeak = _Espeak.get()
        wanted = [VOICE_MAP[v] for v in self._catalog]
        with _Espeak.lock:
            missing = [v for v in wanted if not self._espeak.set_voice(v)]
        if missing:
            raise RuntimeError(f"espeak-ng lacks voices {missing}")

    def voices(self) -> list[str]:
        return self._catalog.names()

    def catalog(self) -> VoiceCatalog:
        return self._catalog

    def validate(self, voice: str | None, params: dict[str, Any]) -> dict[str, Any]:
        if voice is not None and voice not in self._catalog:
            raise InvalidParam(
                "voice",
                f"unknown voice {shown_value(voice)}; valid: {', '.join(self._catalog)}",
            )
        out: dict[str, Any] = {}
        for key, value in params.items():
            if key in SAMPLING_PARAMS:
                out[key] = validate_sampling_param(key, value)
            elif key == "timeout_s":
                out[key] = value  # validated by the server
            elif key == "rate":
                out[key] = require_int(key, value, low=80, high=450)
            elif key == "pitch":
                out[key] = require_int(key, value, low=0, high=100)
            else:
                raise unknown_param(key, SAMPLING_PARAMS | {"timeout_s", "rate", "pitch"})
        return out

    async def synthesize(
        self, text: str, voice: str | None, params: dict[str, Any]
    ) -> AsyncGenerator[Piece, None]:
        default = self._catalog.default
        assert default is not None  # an espeak catalog always has voices
        espeak_voice = VOICE_MAP[voice or default.name]
        rate, pitch = int(params.get("rate", 175)), int(params.get("pitch", 50))
        resampler = soxr.ResampleStream(
            ESPEAK_RATE, OUTPUT_RATE, 1, dtype="int16", quality="HQ"
        )
        pieces = split_text(text, max_chars=_PIECE_CHARS)
        for index, piece in enumerate(pieces):
            raw = await trio.to_thread.run_sync(
                _locked,
                lambda p=piece: self._espeak.synthesize(p, espeak_voice, rate, pitch),
            )
            last = index == len(pieces) - 1
            samples = np.frombuffer(raw, dtype=np.int16)
            resampled = resampler.resample_chunk(samples, last=last)
            for start in range(0, len(resampled), _MAX_CHUNK_SAMPLES):
                yield resampled[start : start + _MAX_CHUNK_SAMPLES].tobytes()

    async def aclose(self) -> None:
        return None
