"""``orpheus-trio voices add|list|show|remove`` against a random-init SNAC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support_llm import snac_dir
from _support_voices import reference_wav

from orpheus_trio.cli.dispatch import main
from orpheus_trio.local.snac_encoder import snac_fingerprint_of
from orpheus_trio.voices.library import VoiceLibrary


def clip(tmp_path: Path, name: str, seconds: float = 3.0, rate: int = 24_000) -> str:
    path = tmp_path / name
    path.write_bytes(reference_wav(seconds, rate))
    return str(path)


def test_add_list_show_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    a, b = clip(tmp_path, "a.wav"), clip(tmp_path, "b.wav", 4.0, 44_100)
    assert main(["voices", "add", "me", "--dir", str(lib), "--snac", str(snac_dir()), "--device", "cpu",
                 "--audio", a, "--text", "hello world", "--audio", b, "--text", "the fox"]) == 0  # fmt: skip
    assert "added voice 'me' (7.0 s" in capsys.readouterr().err
    assert main(["voices", "list", "--dir", str(lib)]) == 0
    assert capsys.readouterr().out == "me\n"
    assert main(["voices", "show", "me", "--dir", str(lib)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["snac"] == snac_fingerprint_of(snac_dir())
    assert [r["text"] for r in shown["references"]] == ["hello world", "the fox"]
    assert [r["source_rate"] for r in shown["references"]] == [24_000, 44_100]
    assert VoiceLibrary(lib, snac=shown["snac"]).get("me").name == "me"
    assert main(["voices", "remove", "me", "--dir", str(lib)]) == 0
    assert main(["voices", "list", "--dir", str(lib)]) == 0
    assert capsys.readouterr().out == ""


def test_env_names_the_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORPHEUS_TRIO_VOICES", str(tmp_path))
    assert main(["voices", "add", "x", "--snac", str(snac_dir()), "--device", "cpu", "--audio", clip(tmp_path, "a.wav"), "--text", "hi"]) == 0
    assert (tmp_path / "x.voice.json").is_file()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["add", "../x", "--audio", "A", "--text", "t"], 2, "letters, digits"),
        (["add", "ok", "--audio", "A", "--audio", "A", "--text", "t"], 2, "one --text per --audio"),
        (["add", "ok", "--audio", "SHORT", "--text", "t"], 1, "at least 3 s"),
        (["add", "ok", "--audio", "/nonexistent.wav", "--text", "t"], 1, "cannot read"),
        (["show", "nobody"], 1, "no custom voice 'nobody'"),
        (["remove", "a/b"], 2, "letters, digits"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str) -> None:
    a, short = clip(tmp_path, "a.wav"), clip(tmp_path, "s.wav", 1.0)
    argv = [short if x == "SHORT" else a if x == "A" else x for x in argv]
    extra = ["--snac", str(snac_dir()), "--device", "cpu"] if argv[0] == "add" else []
    assert main(["voices", *argv, "--dir", str(tmp_path / "lib"), *extra]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_duplicate_is_refused_before_encoding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["voices", "add", "me", "--dir", str(tmp_path), "--snac", str(snac_dir()), "--device", "cpu", "--audio", clip(tmp_path, "a.wav"), "--text", "hi"]
    assert main(args) == 0
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
