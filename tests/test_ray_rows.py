"""The Ray batch's input rows, manifest and dry-run estimate: pure Python, no Ray needed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from orpheus_trio.integrations.ray.estimate import TOKENS_PER_AUDIO_S, estimate
from orpheus_trio.integrations.ray.manifest import Manifest, ManifestEntry
from orpheus_trio.integrations.ray.rows import read_rows
from orpheus_trio.integrations.ray.stages import write_atomically


def test_text_file_rows_get_line_ids_and_bad_rows_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"hello world\n\n   \nthe quick \xff fox\n" + b"x" * 9000 + b"\nbrown fox\n")
    rows = read_rows(path)
    assert [r.id for r in rows] == ["000001", "000002", "000003", "000004", "000005", "000006"]
    assert [r.error for r in rows] == [
        "",
        "empty text",
        "empty text",
        "text: not UTF-8: byte 0xff at character 11",
        "text has 9000 characters; the limit is 8000",
        "",
    ]
    assert rows[3].text == "the quick \ufffd fox"  # shown, not the undecodable byte
    assert rows[5].text == "brown fox"


def test_jsonl_voices_params_ids_and_their_errors(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "text": "hello", "voice": "tara", "temperature": 0, "max_tokens": 100},
        {"id": "b", "text": "hello", "voice": "nobody"},
        {"id": "c", "voice": "tara"},
        {"id": "d", "text": "hello", "top_p": 7},
        {"id": "a", "text": "again"},
        {"id": "../etc", "text": "hello"},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n[1, 2]\n{not json\n", encoding="utf-8")
    rows = read_rows(path, voice="leo")
    by_id = {r.id: r for r in rows}
    assert by_id["a"].voice == "tara" and by_id["a"].params == {"temperature": 0, "max_tokens": 100}
    assert by_id["b"].error.startswith("unknown voice 'nobody'")
    assert by_id["c"].error == "no text field"
    assert by_id["d"].error.startswith("top_p: must be in (0, 1]")
    assert by_id["a@5"].error == "id 'a' is repeated (first used on an earlier row)"
    assert by_id["000006"].error.startswith("id '../etc' is not a file name")
    assert by_id["000007"].error == "not a JSON object but list"
    assert by_id["000008"].error.startswith("not JSON: ")


def test_csv_missing_text_column_fails_every_row_with_that_reason(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,words\n1,hello\n2,world\n", encoding="utf-8")
    rows = read_rows(path)
    assert [r.error for r in rows] == ["no text column (columns: id, words)"] * 2


def test_csv_numbers_are_parsed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,text,temperature,max_tokens\nx,hello,0.5,40\ny,hello,hot,40\n", encoding="utf-8")
    x, y = read_rows(path)
    assert x.params == {"temperature": 0.5, "max_tokens": 40} and not x.error
    assert y.error.startswith("temperature: must be a number")


def test_parquet_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["hello", None], "voice": ["zoe", None]}), path)
    p1, p2 = read_rows(path)
    assert (p1.id, p1.voice, p1.error) == ("p1", "zoe", "")
    assert p2.error == "no text field"


def entry(row_id: str, path: str = "", error: str = "") -> ManifestEntry:
    return ManifestEntry(row_id, "t", "", path, 1.0, 24000, 7, error)


def test_manifest_resumes_done_rows_only_while_their_file_is_there(tmp_path: Path) -> None:
    (tmp_path / "a.flac").write_bytes(b"x")
    with Manifest(tmp_path) as manifest:
        manifest.add(entry("a", "a.flac"))
        manifest.add(entry("b", "b.flac"))  # listed, file gone since
        manifest.add(entry("c", error="boom"))
    assert Manifest(tmp_path).done(tmp_path) == {"a"}
    with Manifest(tmp_path) as manifest:
        manifest.add(entry("c", "a.flac"))  # redone: the later line wins
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]  # compacted: once each
    assert json.loads(lines[2])["error"] == ""


def test_manifest_ignores_a_line_cut_short_by_a_kill(tmp_path: Path) -> None:
    (tmp_path / "a.flac").write_bytes(b"x")
    line = json.dumps(asdict(entry("a", "a.flac")))
    (tmp_path / "manifest.jsonl").write_text(line + "\n" + line[:20])
    assert Manifest(tmp_path).done(tmp_path) == {"a"}


def test_write_atomically_leaves_nothing_half_written(tmp_path: Path) -> None:
    write_atomically(tmp_path / "a.wav", b"data")
    assert (tmp_path / "a.wav").read_bytes() == b"data"
    (tmp_path / "b.wav").mkdir()  # something in the way: the write fails, no partial file stays
    with pytest.raises(OSError):
        write_atomically(tmp_path / "b.wav", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]


def test_dry_run_estimate_counts_only_rows_still_to_do(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a" * 140 + "\n\n" + "b" * 280 + "\n", encoding="utf-8")
    rows = read_rows(path)
    guess = estimate(rows, done={"000001"}, tokens_per_s=82.03125, engines=2)
    assert (guess.rows, guess.bad_rows, guess.skipped_rows, guess.characters) == (1, 1, 1, 280)
    assert guess.audio_s == pytest.approx(20.0)
    assert guess.tokens == round(20.0 * TOKENS_PER_AUDIO_S)
    assert guess.generation_s == pytest.approx(guess.tokens / (82.03125 * 2))


def test_cli_dry_run_estimates_without_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orpheus_trio.cli.dispatch import main

    (tmp_path / "in.txt").write_text("a" * 140 + "\n\n", encoding="utf-8")
    assert main(["batch", str(tmp_path / "in.txt"), "--dry-run", "--tokens-per-second", "82.03125"]) == 0
    assert capsys.readouterr().err == (
        "orpheus-trio batch --dry-run: 1 rows to synthesize (0 already done, 1 bad), 140 characters "
        "-> about 0.00 h of audio, 820 audio tokens, about 0.00 h of generation\n"
    )


def test_cli_ray_without_snac_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orpheus_trio.cli.dispatch import main

    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    assert main(["batch", str(tmp_path / "in.txt"), "--ray", "--model", "m"]) == 2
    assert "--ray needs --snac" in capsys.readouterr().err


@pytest.mark.parametrize("audio_format", ["flac", "wav"])
def test_files_are_lossless_and_say_their_length(audio_format: str) -> None:
    import io

    import numpy as np
    import soundfile

    from orpheus_trio.integrations.ray.stages import encode

    pcm = (np.sin(np.arange(15_000) / 10) * 8000).astype("<i2").tobytes()
    info = soundfile.info(io.BytesIO(encode(pcm, audio_format)))
    assert (info.frames, info.samplerate, info.channels) == (15_000, 24000, 1)
    audio, _ = soundfile.read(io.BytesIO(encode(pcm, audio_format)), dtype="int16")
    assert audio.tobytes() == pcm
