"""Audio: PCM clips and WAV files (:mod:`.pcm`, everything re-exported here), the joins
between long-text pieces (:mod:`.joins`) and compressed formats (:mod:`.formats`)."""

from .pcm import (
    ORPHEUS_FORMAT,
    SAMPLE_RATE,
    AudioFormat,
    Clip,
    WavWriter,
    collect,
    concatenate,
    read_wav,
    save_wav_stream,
    temporary_path,
    wav_header,
)

__all__ = [
    "ORPHEUS_FORMAT",
    "SAMPLE_RATE",
    "AudioFormat",
    "Clip",
    "WavWriter",
    "collect",
    "concatenate",
    "read_wav",
    "save_wav_stream",
    "temporary_path",
    "wav_header",
]
