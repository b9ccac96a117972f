"""Audio formats: the PCM stream (s16le mono 24 kHz) encoded as it arrives.

One encoder per stream, fed chunk by chunk: ``encode(pcm)`` returns the bytes
that are ready now (possibly none: codecs work in frames), ``finish()`` the
rest. ``pcm`` passes through; ``wav`` is a header with unknown length (sizes
``0xFFFFFFFF``, what ffmpeg, browsers and common players accept for a stream)
then the PCM; ``opus`` (Ogg), ``aac`` (ADTS) and ``flac`` use PyAV, which
bundles ffmpeg's encoders; ``mp3`` uses lameenc (LAME itself), or PyAV where
lameenc is missing (``pip install 'orpheus-trio[formats]'`` brings both).
Picked by measurement (``bench/encoders.py``, figures in ``bench/RESULTS.md``):
lameenc costs a fifth of PyAV's CPU for the same MP3; soundfile (libsndfile)
seeks back to patch its headers, so it cannot hand bytes out as they are made.

``speed`` other than 1 time-stretches the audio before encoding (ffmpeg's
``atempo``: same pitch, shorter or longer), so every format honours it.

Encoding costs CPU; :func:`encode_stream` runs each step in a worker thread
so the event loop never waits on a codec.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import aclosing
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
import anyio.to_thread

from .pcm import SAMPLE_RATE

__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "MAX_SPEED",
    "MIN_SPEED",
    "Encoder",
    "FormatUnavailable",
    "check_format",
    "check_speed",
    "encode_stream",
    "open_encoder",
    "require_codec_library",
    "wav_stream_header",
]

#: Every format, in the order OpenAI's API lists them.
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
#: Formats that need no codec library.
_BUILTIN = frozenset({"wav", "pcm"})
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": f"audio/pcm; rate={SAMPLE_RATE}; channels=1; format=s16le",
}
#: The range OpenAI documents for ``speed``.
MIN_SPEED, MAX_SPEED = 0.25, 4.0
_INSTALL_HINT = "pip install 'orpheus-trio[formats]' (PyAV)"


@dataclass(frozen=True)
class _Codec:
    container: str
    codec: str
    bit_rate: int | None
    options: dict[str, str]
    codec_options: dict[str, str]


_MP3_KBPS = 64
# Bit rates suit 24 kHz mono speech. Ogg pages are flushed every 20 ms, not
# every second (its default), so Opus bytes leave as soon as they are encoded.
# FLAC blocks of 1152 samples (not 4608) so the first 85 ms chunk already
# yields audio.
_CODECS: dict[str, _Codec] = {
    "mp3": _Codec("mp3", "libmp3lame", _MP3_KBPS * 1000, {}, {}),
    "opus": _Codec("ogg", "libopus", 32_000, {"page_duration": "20000"}, {}),
    "aac": _Codec("adts", "aac", 64_000, {}, {}),
    "flac": _Codec("flac", "flac", None, {}, {"frame_size": "1152"}),
}


class FormatUnavailable(RuntimeError):
    """The format needs a codec library that is not installed."""


class Encoder(Protocol):
    """One stream's encoder (not thread-safe: one call at a time)."""

    def encode(self, pcm: bytes) -> bytes:
        """Feed PCM (even length); return the encoded bytes ready now."""
        ...

    def finish(self) -> bytes:
        """End the stream; return what is left (the encoder is done after this)."""
        ...


def check_format(name: object) -> str:
    """``name`` if it is a known format, else ``ValueError`` listing the valid ones."""
    if not isinstance(name, str) or name not in FORMATS:
        raise ValueError(f"unknown audio format {name!r}; valid: {', '.join(FORMATS)}")
    return name


def check_speed(speed: object) -> float:
    """``speed`` as a float within OpenAI's range, else ``ValueError`` saying the range."""
    if (
        isinstance(speed, bool)
        or not isinstance(speed, int | float)
        or not MIN_SPEED <= speed <= MAX_SPEED
    ):
        raise ValueError(
            f"speed must be a number from {MIN_SPEED:g} to {MAX_SPEED:g}, got {speed!r}"
        )
    return float(speed)


def require_codec_library(format: str, speed: float = 1.0) -> None:
    """Raise :class:`FormatUnavailable` unless ``format`` at ``speed`` can be encoded here."""
    if format == "mp3" and speed == 1.0 and _lameenc() is not None:
        return
    if format not in _BUILTIN or speed != 1.0:
        _import_av()


def open_encoder(format: str, *, speed: float = 1.0) -> Encoder:
    """A fresh encoder for one stream (``FormatUnavailable`` when PyAV is missing)."""
    check_format(format)
    speed = check_speed(speed)
    inner: Encoder
    if format == "pcm":
        inner = _PcmEncoder()
    elif format == "wav":
        inner = _WavEncoder()
    elif format == "mp3" and _lameenc() is not None:
        inner = _LameEncoder()
    else:
        inner = _AvEncoder(_CODECS[format])
    if speed != 1.0:
        return _Stretched(_Tempo(speed), inner)
    return inner


async def encode_stream(
    chunks: AsyncIterable[bytes], format: str, *, speed: float = 1.0
) -> AsyncGenerator[bytes, None]:
    """Yield ``chunks`` (PCM) encoded as ``format``, each step in a worker thread.

    Raises ``ValueError`` for an unknown format or speed and
    :class:`FormatUnavailable` before reading anything if PyAV is needed and missing.
    """
    encoder = open_encoder(format, speed=speed)
    async with aclosing(_aiter(chunks)) as source:
        async for pcm in source:
            data = await anyio.to_thread.run_sync(encoder.encode, pcm)
            if data:
                yield data
    tail = await anyio.to_thread.run_sync(encoder.finish)
    if tail:
        yield tail


async def _aiter(chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    async for pcm in chunks:
        yield pcm


class _PcmEncoder:
    def encode(self, pcm: bytes) -> bytes:
        return pcm

    def finish(self) -> bytes:
        return b""


def wav_stream_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 44-byte PCM WAV header whose sizes say "unknown" (``0xFFFFFFFF``)."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )


class _WavEncoder:
    def __init__(self) -> None:
        self._header: bytes = wav_stream_header()

    def encode(self, pcm: bytes) -> bytes:
        header, self._header = self._header, b""
        return header + pcm

    def finish(self) -> bytes:
        header, self._header = self._header, b""
        return header  # an empty stream is still a (silent) WAV file


def _import_av() -> Any:
    try:
        import av
    except ImportError as error:
        raise FormatUnavailable(
            f"this format needs PyAV, which is not installed: {_INSTALL_HINT}"
        ) from error
    return av


def _lameenc() -> Any:
    try:
        import lameenc
    except ImportError:
        return None
    return lameenc


class _LameEncoder:
    """MP3 by LAME (lameenc): plain MPEG frames, which players stream as they come."""

    def __init__(self) -> None:
        lameenc = _lameenc()
        self._lame = lameenc.Encoder()
        self._lame.set_bit_rate(_MP3_KBPS)
        self._lame.set_in_sample_rate(SAMPLE_RATE)
        self._lame.set_channels(1)
        self._lame.set_quality(5)  # LAME's default trade-off of speed and quality
        self._started = self._done = False

    def encode(self, pcm: bytes) -> bytes:
        if not pcm:
            return b""
        self._started = True
        return bytes(self._lame.encode(pcm))

    def finish(self) -> bytes:
        if self._done or not self._started:  # lameenc refuses to flush an unused encoder
            self._done = True
            return b""
        self._done = True
        return bytes(self._lame.flush())


class _Collector:
    """A write-only file for PyAV's muxer: what it wrote since the last ``take``.

    Having no ``seek``, it makes the muxer stream (no header patched at the end).
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class _AvEncoder:
    """A PyAV encoder and muxer writing into memory, drained after every step."""

    def __init__(self, codec: _Codec) -> None:
        av = _import_av()
        self._av = av
        self._out = _Collector()
        self._container = av.open(
            self._out, mode="w", format=codec.container, options=codec.options
        )
        self._stream = self._container.add_stream(
            codec.codec, rate=SAMPLE_RATE, layout="mono", options=codec.codec_options
        )
        if codec.bit_rate is not None:
            self._stream.bit_rate = codec.bit_rate
        self._pts = 0
        self._done = False

    def encode(self, pcm: bytes) -> bytes:
        if not pcm:
            return self._out.take()
        frame = _audio_frame(self._av, pcm, self._pts)
        self._pts += frame.samples
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._out.take()

    def finish(self) -> bytes:
        if not self._done:
            self._done = True
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._out.take()


def _audio_frame(av: Any, pcm: bytes, pts: int) -> Any:
    """One PyAV frame of s16 mono PCM at 24 kHz, stamped at sample ``pts``."""
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    frame.time_base = Fraction(1, SAMPLE_RATE)
    return frame


class _Tempo:
    """Time-stretch PCM by ``speed`` keeping its pitch (ffmpeg's ``atempo``)."""

    def __init__(self, speed: float) -> None:
        av = _import_av()
        self._av = av
        self._graph = av.filter.Graph()
        source = self._graph.add_abuffer(
            format="s16",
            sample_rate=SAMPLE_RATE,
            layout="mono",
            time_base=Fraction(1, SAMPLE_RATE),
        )
        node = source
        # One atempo takes 0.5..100; below 0.5 two stages share the factor.
        stages = 2 if speed < 0.5 else 1
        for _ in range(stages):
            stage = self._graph.add("atempo", f"{speed ** (1 / stages):.6f}")
            node.link_to(stage)
            node = stage
        fmt = self._graph.add(
            "aformat", f"sample_fmts=s16:sample_rates={SAMPLE_RATE}:channel_layouts=mono"
        )
        node.link_to(fmt)
        sink = self._graph.add("abuffersink")
        fmt.link_to(sink)
        self._graph.configure()
        self._source, self._sink = source, sink
        self._pts = 0

    def process(self, pcm: bytes) -> bytes:
        if not pcm:
            return b""
        frame = _audio_frame(self._av, pcm, self._pts)
        self._pts += frame.samples
        self._source.push(frame)
        return self._pull()

    def flush(self) -> bytes:
        self._source.push(None)
        return self._pull()

    def _pull(self) -> bytes:
        parts: list[bytes] = []
        while True:
            try:
                frame = self._sink.pull()
            except (BlockingIOError, EOFError, self._av.error.EOFError):
                break
            parts.append(frame.to_ndarray().astype("<i2", copy=False).tobytes())
        return b"".join(parts)


class _Stretched:
    """An encoder fed through a :class:`_Tempo` stage."""

    def __init__(self, tempo: _Tempo, inner: Encoder) -> None:
        self._tempo, self._inner = tempo, inner

    def encode(self, pcm: bytes) -> bytes:
        return self._inner.encode(self._tempo.process(pcm))

    def finish(self) -> bytes:
        return self._inner.encode(self._tempo.flush()) + self._inner.finish()

