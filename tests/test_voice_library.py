"""The voice library: portable voice files, names, checksums, checkpoints, atomic adds."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from _support_snac import random_frames

from orpheus_trio.voices.library import (
    CustomVoice,
    InvalidVoiceName,
    Reference,
    VoiceExists,
    VoiceFileError,
    VoiceLibrary,
    VoiceNotFound,
    check_voice_name,
    default_voices_dir,
)

SNAC_A = "sha256:" + "a" * 64
SNAC_B = "sha256:" + "b" * 64


def voice(name: str = "my-voice", snac: str = SNAC_A, pairs: int = 1) -> CustomVoice:
    refs = tuple(
        Reference(f"what clip {i} says", random_frames(36, seed=i), 36 * 2048 - 100, 44_100)
        for i in range(pairs)
    )
    return CustomVoice(name, refs, snac)


def test_a_voice_file_round_trips_exactly(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path, snac=SNAC_A)
    original = voice(pairs=2)
    path = library.add(original)
    assert path == tmp_path / "my-voice.voice.json"
    loaded = library.get("my-voice")
    assert loaded.name == original.name and loaded.snac == SNAC_A
    for a, b in zip(loaded.references, original.references, strict=True):
        assert (a.text, a.samples, a.source_rate) == (b.text, b.samples, b.source_rate)
        assert np.array_equal(a.frames, b.frames)
    assert library.names() == ["my-voice"] and "my-voice" in library
    assert path.stat().st_size < 4000  # small and portable: 36 frames ~ 500 bytes of codes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_wrong_checksum_is_refused(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path, snac=SNAC_A)
    path = library.add(voice())
    body = json.loads(path.read_text())
    body["references"][0]["text"] = "something else"
    path.write_text(json.dumps(body))
    with pytest.raises(VoiceFileError, match="checksum does not match"):
        library.get("my-voice")


def test_a_flipped_code_is_refused(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path, snac=SNAC_A)
    path = library.add(voice())
    raw = bytearray(path.read_bytes())
    at = raw.index(b'"codes": "') + 20
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
    path.write_bytes(bytes(raw))
    with pytest.raises(VoiceFileError, match="damaged"):
        library.get("my-voice")


@pytest.mark.parametrize("content", [b"", b"\xff\xfe", b"{}", b"[1, 2]", b'{"format": "x"}'])
def test_a_damaged_file_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "v.voice.json").write_bytes(content)
    with pytest.raises(VoiceFileError):
        VoiceLibrary(tmp_path).get("v")


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    path = VoiceLibrary(tmp_path).add(voice())
    body = json.loads(path.read_text())
    body["version"] = 99
    path.write_text(json.dumps(body))
    with pytest.raises(VoiceFileError, match="version 99"):
        VoiceLibrary(tmp_path).get("my-voice")


def test_a_voice_of_another_snac_checkpoint_is_refused(tmp_path: Path) -> None:
    VoiceLibrary(tmp_path, snac=SNAC_B).add(voice(snac=SNAC_B))
    with pytest.raises(VoiceFileError, match="another SNAC checkpoint"):
        VoiceLibrary(tmp_path, snac=SNAC_A).get("my-voice")
    assert VoiceLibrary(tmp_path).get("my-voice").snac == SNAC_B  # unchecked: listing only
    with pytest.raises(VoiceFileError, match="another SNAC"):
        VoiceLibrary(tmp_path, snac=SNAC_A).add(voice("other", snac=SNAC_B))


def test_a_file_renamed_to_another_voice_is_refused(tmp_path: Path) -> None:
    path = VoiceLibrary(tmp_path).add(voice("alice"))
    path.rename(tmp_path / "bob.voice.json")
    with pytest.raises(VoiceFileError, match="holds voice 'alice'"):
        VoiceLibrary(tmp_path).get("bob")


@pytest.mark.parametrize("name", ["../x", "a/b", "a\x00b", "a\\b", "..", ".", "", "a b", "x" * 65, "a\nb"])
def test_names_that_could_be_paths_are_refused(tmp_path: Path, name: str) -> None:
    library = VoiceLibrary(tmp_path)
    with pytest.raises(InvalidVoiceName):
        check_voice_name(name)
    with pytest.raises(InvalidVoiceName):
        library.get(name)
    with pytest.raises(InvalidVoiceName):
        library.remove(name)
    assert name not in library
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["유나", "长乐", "ऋतिका", "my_voice.v2", "Zoë-1"])
def test_unicode_names_pass(tmp_path: Path, name: str) -> None:
    library = VoiceLibrary(tmp_path)
    library.add(voice(name))
    assert library.names() == [name] and library.get(name).name == name


def test_a_duplicate_name_is_refused_and_the_first_kept(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path)
    library.add(voice(pairs=1))
    with pytest.raises(VoiceExists, match="already exists"):
        library.add(voice(pairs=2))
    assert len(library.get("my-voice").references) == 1
    with pytest.raises(VoiceExists, match="stock voice"):
        library.add(voice("tara"), reserved={"tara", "leo"})


def test_concurrent_adds_of_one_name_let_exactly_one_win(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path)
    outcomes: list[str] = []

    def add(pairs: int) -> None:
        try:
            library.add(voice(pairs=pairs))
            outcomes.append("added")
        except VoiceExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=add, args=(1 + i % 3,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["added"] + ["exists"] * 7
    library.get("my-voice")  # whole, checksum good


def test_remove(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path)
    library.add(voice())
    library.get("my-voice")  # cached
    library.remove("my-voice")
    assert library.names() == []
    with pytest.raises(VoiceNotFound):
        library.get("my-voice")
    with pytest.raises(VoiceNotFound):
        library.remove("my-voice")


def test_missing_directory_lists_nothing(tmp_path: Path) -> None:
    assert VoiceLibrary(tmp_path / "none").names() == []


def test_default_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORPHEUS_TRIO_VOICES", str(tmp_path / "v"))
    assert default_voices_dir() == tmp_path / "v"
    monkeypatch.delenv("ORPHEUS_TRIO_VOICES")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_voices_dir() == tmp_path / "orpheus-trio" / "voices"


def test_reference_checks() -> None:
    with pytest.raises(ValueError, match="transcript"):
        Reference(" ", random_frames(2, seed=0), 2048, 24_000)
    with pytest.raises(ValueError, match="shape"):
        Reference("hi", np.zeros((2, 6), np.int64), 2048, 24_000)
    with pytest.raises(ValueError, match="0..4095"):
        Reference("hi", np.full((2, 7), 4096, np.int64), 2048, 24_000)
    with pytest.raises(ValueError, match="1 to 8 references"):
        CustomVoice("v", (), SNAC_A)
