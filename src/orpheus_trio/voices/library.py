"""The voice library: custom (cloned) voices, one small portable file each.

A voice file (``NAME.voice.json``) holds what the pretrained Orpheus
checkpoint needs to clone the voice: one or more references, each a
transcript, its SNAC code frames (``(n, 7)``, 0..4095, stored as base64 of
little-endian uint16), the clip's sample count at 24 kHz and its original
sample rate; the fingerprint of the SNAC checkpoint that encoded it (codes of
one SNAC mean nothing to another); a format name and version; and a sha256
checksum over all of it. A damaged file, a wrong checksum, an unknown format
version or another SNAC checkpoint is refused with :class:`VoiceFileError`,
never used.

Files are written to a temporary name and hard-linked into place, so a voice
appears whole or not at all, and two writers of one name cannot both win
(:class:`VoiceExists`). Reads go to the file each time (cached while its size
and mtime stay the same), so voices added or removed by another process or
worker sharing the directory are seen at once; a stream that already built its
prompt keeps it when its voice is removed.

Sans torch: this module reads and writes files; encoding audio is
:mod:`orpheus_trio.local.cloning`'s job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .names import InvalidVoiceName, check_voice_name, is_voice_name

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_REFERENCES",
    "CustomVoice",
    "InvalidVoiceName",
    "Reference",
    "VoiceExists",
    "VoiceFileError",
    "VoiceLibrary",
    "VoiceNotFound",
    "check_voice_name",
    "default_voices_dir",
]

FORMAT = "orpheus-trio-voice"
FORMAT_VERSION = 1
SUFFIX = ".voice.json"
#: References per voice: each costs prompt positions (about 82 tokens per second of audio).
MAX_REFERENCES = 8
#: No voice file is larger (8 references of 30 s are about 60 kB).
MAX_FILE_BYTES = 1 << 20
MAX_TRANSCRIPT_CHARS = 2000
_FRAME_WIDTH = 7
_CODEBOOK_SIZE = 4096
#: Environment variable naming the default library directory.
VOICES_ENV = "ORPHEUS_TRIO_VOICES"

CodeFrames = npt.NDArray[np.int64]


class VoiceNotFound(KeyError):
    """No custom voice of that name in the library."""

    def __str__(self) -> str:
        return str(self.args[0])


class VoiceExists(FileExistsError):
    """A voice of that name is already in the library (remove it first)."""


class VoiceFileError(ValueError):
    """A voice file that cannot be used: damaged, tampered with, or from another SNAC."""


def default_voices_dir() -> Path:
    """``$ORPHEUS_TRIO_VOICES``, else ``$XDG_DATA_HOME/orpheus-trio/voices``
    (``~/.local/share/orpheus-trio/voices``)."""
    named = os.environ.get(VOICES_ENV)
    if named:
        return Path(named).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "orpheus-trio" / "voices"


@dataclass(frozen=True, slots=True)
class Reference:
    """One (transcript, audio) pair: the audio as SNAC code frames."""

    text: str
    frames: CodeFrames
    samples: int
    source_rate: int

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError("a reference needs the transcript of its clip")
        if len(self.text) > MAX_TRANSCRIPT_CHARS:
            raise ValueError(f"a transcript has at most {MAX_TRANSCRIPT_CHARS} characters")
        frames = self.frames
        if frames.ndim != 2 or frames.shape[1] != _FRAME_WIDTH or len(frames) == 0:
            raise ValueError(f"reference codes must have shape (n>0, 7), got {frames.shape}")
        if frames.min() < 0 or frames.max() >= _CODEBOOK_SIZE:
            raise ValueError(f"reference codes must be in 0..{_CODEBOOK_SIZE - 1}")
        if not 0 < self.samples <= len(frames) * 2048 or self.source_rate <= 0:
            raise ValueError(f"{self.samples} samples do not fit {len(frames)} frames")

    @property
    def duration_s(self) -> float:
        return self.samples / 24_000


@dataclass(frozen=True, slots=True)
class CustomVoice:
    """A cloned voice: its name, references and the SNAC checkpoint its codes belong to."""

    name: str
    references: tuple[Reference, ...]
    snac: str

    def __post_init__(self) -> None:
        check_voice_name(self.name)
        if not 1 <= len(self.references) <= MAX_REFERENCES:
            raise ValueError(f"a voice has 1 to {MAX_REFERENCES} references, got {len(self.references)}")
        if not self.snac.startswith("sha256:"):
            raise ValueError(f"snac must be a checkpoint fingerprint (sha256:...), got {self.snac!r}")

    @property
    def duration_s(self) -> float:
        return sum(r.duration_s for r in self.references)

    def to_bytes(self) -> bytes:
        """The voice file's bytes (JSON, checksum included)."""
        body = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "snac": self.snac,
            "sample_rate": 24_000,
            "references": [
                {
                    "text": r.text,
                    "samples": r.samples,
                    "source_rate": r.source_rate,
                    "frames": len(r.frames),
                    "codes": base64.b64encode(r.frames.astype("<u2").tobytes()).decode("ascii"),
                }
                for r in self.references
            ],
        }
        body["checksum"] = _checksum(body)
        return (json.dumps(body, ensure_ascii=False, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "voice file") -> CustomVoice:
        """Parse and check a voice file; :class:`VoiceFileError` says what is wrong."""
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise VoiceFileError(f"{where} is damaged: not JSON ({error})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise VoiceFileError(f"{where} is not an orpheus-trio voice file")
        if body.get("version") != FORMAT_VERSION:
            raise VoiceFileError(
                f"{where} has format version {body.get('version')!r}; this orpheus-trio reads "
                f"version {FORMAT_VERSION} (add the voice again from its audio)"
            )
        stated = body.pop("checksum", None)
        if stated != _checksum(body):
            raise VoiceFileError(f"{where} is damaged: its checksum does not match its content")
        try:
            references = tuple(_reference(r) for r in body["references"])
            return cls(str(body["name"]), references, str(body["snac"]))
        except (KeyError, TypeError, ValueError) as error:
            raise VoiceFileError(f"{where} is damaged: {error}") from None


def _reference(item: Any) -> Reference:
    raw = base64.b64decode(item["codes"], validate=True)
    frames = np.frombuffer(raw, dtype="<u2").astype(np.int64)
    if len(frames) != int(item["frames"]) * _FRAME_WIDTH:
        raise ValueError(f"{len(frames)} codes for {item['frames']} frames")
    return Reference(str(item["text"]), frames.reshape(-1, _FRAME_WIDTH), int(item["samples"]), int(item["source_rate"]))


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class VoiceLibrary:
    """A directory of voice files. ``snac``: the fingerprint of the SNAC checkpoint that
    will decode (``None``: voices are listed and read without that check, e.g. by
    ``voices list``); :meth:`get` refuses a voice encoded with another."""

    def __init__(self, directory: str | os.PathLike[str], *, snac: str | None = None) -> None:
        self.directory = Path(directory).expanduser()
        self.snac = snac
        self._cache: dict[str, tuple[tuple[int, int], CustomVoice]] = {}
        self._lock = threading.Lock()

    def path_of(self, name: str) -> Path:
        return self.directory / f"{check_voice_name(name)}{SUFFIX}"

    def names(self) -> list[str]:
        """The voices' names, sorted (files that are not voice files are ignored)."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                name = entry.name[: -len(SUFFIX)]
                if is_voice_name(name):
                    found.append(name)
        return sorted(found)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and is_voice_name(name) and self.path_of(name).is_file()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> CustomVoice:
        """The voice ``name``, checked; :class:`VoiceNotFound`, :class:`VoiceFileError`."""
        path = self.path_of(name)
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                key = (stat.st_size, stat.st_mtime_ns)
                with self._lock:
                    cached = self._cache.get(name)
                if cached is not None and cached[0] == key:
                    voice = cached[1]
                else:
                    if stat.st_size > MAX_FILE_BYTES:
                        raise VoiceFileError(f"{path} is {stat.st_size} bytes: not a voice file")
                    voice = CustomVoice.from_bytes(f.read(), where=str(path))
                    with self._lock:
                        self._cache[name] = (key, voice)
        except FileNotFoundError:
            raise VoiceNotFound(f"no custom voice {name!r} in {self.directory}") from None
        if voice.name != name:
            raise VoiceFileError(f"{path} holds voice {voice.name!r}, not {name!r}")
        if self.snac is not None and voice.snac != self.snac:
            raise VoiceFileError(
                f"voice {name!r} was encoded with another SNAC checkpoint ({voice.snac[:19]}...) "
                f"than the one this server decodes with ({self.snac[:19]}...); add it again "
                "from its audio with this checkpoint"
            )
        return voice

    def add(self, voice: CustomVoice, *, reserved: Collection[str] = ()) -> Path:
        """Write ``voice`` atomically; :class:`VoiceExists` when the name is taken
        (in the library, or ``reserved``: the stock voices' names)."""
        if voice.name in reserved:
            raise VoiceExists(f"{voice.name!r} is a stock voice's name; choose another")
        if self.snac is not None and voice.snac != self.snac:
            raise VoiceFileError("the voice was encoded with another SNAC checkpoint than this library's")
        final = self.path_of(voice.name)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".voice-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(voice.to_bytes())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, final)  # fails if the name exists: no writer overwrites another
            except FileExistsError:
                raise VoiceExists(f"a voice named {voice.name!r} already exists; remove it first") from None
        finally:
            os.unlink(tmp)
        return final

    def remove(self, name: str) -> None:
        """Delete the voice ``name``; :class:`VoiceNotFound` when there is none.

        Streams that already started with it finish with the prompt they built.
        """
        try:
            self.path_of(name).unlink()
        except FileNotFoundError:
            raise VoiceNotFound(f"no custom voice {name!r} in {self.directory}") from None
        with self._lock:
            self._cache.pop(name, None)


def references_summary(voice: CustomVoice) -> Sequence[dict[str, Any]]:
    """What ``voices show`` prints for each reference."""
    return [
        {"text": r.text, "seconds": round(r.duration_s, 2), "frames": len(r.frames), "source_rate": r.source_rate}
        for r in voice.references
    ]
