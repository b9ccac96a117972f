"""Batch synthesis: parsing, bounded concurrency, failures, resume, progress, and the CLI end to end."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _support_cli import orpheus_trio
from _support_server import StartServer

from orpheus_trio.audio import read_wav
from orpheus_trio.cli.batch_jobs import (
    LOCK_NAME,
    BatchDirectoryBusy,
    BatchInputError,
    BatchItem,
    BatchProgress,
    parse_items,
    run_batch,
)
from orpheus_trio.cli.batch import ProgressDisplay
from orpheus_trio.errors import ServiceError
from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream

# -- parsing -----------------------------------------------------------------


def test_plain_lines_are_numbered_skipping_blanks_and_comments() -> None:
    items = parse_items(
        "Hello.\n\n# a comment\n  World.  \n", voice="leo", params={"seed": 1}
    )
    assert items == [
        BatchItem(1, "Hello.", "0001.wav", "leo", {"seed": 1}),
        BatchItem(4, "World.", "0002.wav", "leo", {"seed": 1}),
    ]


def test_jsonl_items_override_defaults_and_mix_with_plain_lines() -> None:
    content = "\n".join(
        [
            json.dumps(
                {"text": "One.", "voice": "mia", "params": {"seed": 2}, "output": "one"}
            ),
            "Two.",
            json.dumps({"text": "Three.", "output": "third.WAV"}),
        ]
    )
    items = parse_items(content, voice="leo", params={"seed": 1, "rtf": 0})
    assert items == [
        BatchItem(1, "One.", "one.wav", "mia", {"seed": 2, "rtf": 0}),
        BatchItem(2, "Two.", "0002.wav", "leo", {"seed": 1, "rtf": 0}),
        BatchItem(3, "Three.", "third.WAV", "leo", {"seed": 1, "rtf": 0}),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('ok\n{"text": "x",}', "line 2: not valid JSON"),
        ('["text"]\n{"text": 1}', "line 2: 'text' must be a non-empty string"),
        ('{"text": "x", "speed": 2}', "line 1: unknown key(s) speed"),
        # Nested past Python's recursion limit: the parser raises RecursionError.
        ('ok\n{"text": "x", "params": ' + "[" * 100_000, "line 2: not valid JSON"),
        ('{"text": "   "}', "line 1: 'text' must be a non-empty string"),
        ('{"text": "x", "voice": 3}', "line 1: 'voice' must be a string or null"),
        ('{"text": "x", "params": [1]}', "line 1: 'params' must be a JSON object"),
        (
            '{"text": "x", "output": "../evil.wav"}',
            "line 1: 'output' must be a plain file name",
        ),
        ('{"text": "x", "output": "/etc/x.wav"}', "'output' must be a plain file name"),
        (
            '{"text": "x", "output": ".hidden.wav"}',
            "'output' must be a plain file name",
        ),
        (
            '{"text": "x", "output": "a.wav"}\n{"text": "y", "output": "a"}',
            "line 2: output 'a.wav' is also",
        ),
    ],
)
def test_malformed_input_is_refused_naming_the_line(content: str, message: str) -> None:
    with pytest.raises(BatchInputError) as info:
        parse_items(content)
    assert message in str(info.value)


# -- running -----------------------------------------------------------------


@dataclass
class FakeSynth:
    """Chunks per item; items whose text contains "bad" fail after their first chunk."""

    running: int = 0
    max_running: int = 0
    calls: list[str] = field(default_factory=list)

    async def __call__(self, item: BatchItem) -> AsyncIterator[bytes]:
        self.calls.append(item.text)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            for _ in range(3):
                await trio.sleep(1)
                yield b"\x01\x00" * 2400
                if "bad" in item.text:
                    raise ServiceError("engine_error", "scripted")
        finally:
            self.running -= 1


async def test_run_batch_bounds_concurrency_records_failures_and_resumes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    items = parse_items("\n".join(["ok"] * 6 + ["bad one", "ok"]))
    synth = FakeSynth()
    seen: list[tuple[str, float | None]] = []
    report = await run_batch(
        items,
        tmp_path,
        synth,
        concurrency=3,
        on_progress=lambda item, s: seen.append((item.output, s)),
    )
    assert synth.max_running == 3
    assert [i.output for i in report.written] == sorted(
        i.output for i in report.written
    )
    assert len(report.written) == 7 and report.skipped == []
    assert report.audio_s == pytest.approx(7 * 0.3)
    [failure] = report.failed
    assert (
        failure.item.output == "0007.wav"
        and "ServiceError: engine_error: scripted" in failure.reason
    )
    assert ("0007.wav", None) in seen and len(seen) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{i:04d}.wav" for i in range(1, 9) if i != 7
    ]
    assert read_wav(tmp_path / "0001.wav").duration_s == pytest.approx(0.3)

    # A second run does only what is missing.
    again = FakeSynth()
    report2 = await run_batch(items, tmp_path, again, concurrency=3)
    assert again.calls == ["bad one"]
    assert len(report2.skipped) == 7 and len(report2.failed) == 1


async def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".0001.wav.99999999.part").write_bytes(b"half")
    items = parse_items("bad")
    await run_batch(items, tmp_path, FakeSynth(), concurrency=1)
    assert list(tmp_path.iterdir()) == []


async def test_a_second_batch_into_the_same_directory_is_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Its clean-up of "leftover" temporaries would delete the live run's files.
    first_synth, second_synth = FakeSynth(), FakeSynth()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_batch, parse_items("one"), tmp_path, first_synth)
        await trio.sleep(1.5)  # the first run is writing its .part file
        (part,) = tmp_path.glob(".0001.wav.*.part")
        with pytest.raises(BatchDirectoryBusy, match="another batch is writing into"):
            await run_batch(parse_items("one"), tmp_path, second_synth)
        assert part.exists() and second_synth.calls == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001.wav"]  # lock gone too
    other = tmp_path / "other"
    await run_batch(parse_items("two"), other, FakeSynth())  # other directories are free
    assert (other / "0001.wav").exists()


async def test_a_lock_file_left_by_a_killed_run_does_not_block(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    (tmp_path / LOCK_NAME).write_bytes(b"")  # the file outlives its process; flock does not
    report = await run_batch(parse_items("one"), tmp_path, FakeSynth())
    assert len(report.written) == 1 and not (tmp_path / LOCK_NAME).exists()


# -- progress ----------------------------------------------------------------


def test_progress_renders_items_audio_rate_and_eta() -> None:
    progress = BatchProgress(total=4, started=100.0)
    assert (
        progress.render(100.0, width=8)
        == "[........]  0/4 items  0.0 s audio  0.0x real time  ETA --:--"
    )
    progress.item_finished(6.0)
    assert (
        progress.render(102.0, width=8)
        == "[##......]  1/4 items  6.0 s audio  3.0x real time  ETA 0:06"
    )
    progress.item_finished(None)
    assert progress.render(104.0, width=8).endswith("ETA 0:04  (1 failed)")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_display_redraws_in_place_on_a_terminal_and_throttles_plain_output() -> (
    None
):
    plain = io.StringIO()
    display = ProgressDisplay(BatchProgress(total=3, started=0.0), plain)
    # Shown: the first update; at 0.5 s too soon; at 1.2 s (no new item) a second has passed;
    # at 1.3 s too soon, but the last item is always shown.
    for now, finished_an_item in ((0.1, True), (0.5, True), (1.2, False), (1.3, True)):
        if finished_an_item:
            display.progress.item_finished(1.0)
        display.show(now)
    lines = plain.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines] == [
        "1/3 items",
        "2/3 items",
        "3/3 items",
    ]

    tty = Terminal()
    display = ProgressDisplay(BatchProgress(total=1, started=0.0), tty)
    display.progress.item_finished(2.0)
    display.show(1.0)
    display.close(1.0)
    assert (
        tty.getvalue().startswith("\r[")
        and "\x1b[K" in tty.getvalue()
        and tty.getvalue().endswith("\n")
    )


# -- the command ---------------------------------------------------------------


async def test_batch_command_writes_exact_audio_lists_failures_and_resumes(
    start_server: StartServer, tmp_path: Path
) -> None:
    engine = SyntheticEngine()
    server = await start_server(engine)
    items: list[dict[str, Any]] = [
        {"text": "First item.", "output": "first"},
        {"text": "Second item fails.", "params": {"error_after": 1}},
        {"text": "Third item.", "voice": "zoe", "params": {"seed": 5}},
    ]
    source = tmp_path / "items.jsonl"
    source.write_text(
        "\n".join(json.dumps(item) for item in items) + "\nPlain fourth.\n"
    )
    out = tmp_path / "out"
    args: list[str | Path] = [
        "batch",
        source,
        "--out-dir",
        out,
        "--url",
        server.base_url,
        "--concurrency",
        "2",
    ]

    first = await orpheus_trio(*args, "--param", "chunk_samples=500")
    err = first.stderr.decode()
    assert first.returncode == 1, err
    assert "3 written, 0 skipped (already complete), 1 failed" in err
    assert "FAILED line 2 -> 0002.wav: ServiceError: engine_error" in err
    assert (
        "4/4 items" in err and "ETA" in err
    )  # plain progress lines when stderr is not a terminal
    assert sorted(p.name for p in out.iterdir()) == [
        "0003.wav",
        "0004.wav",
        "first.wav",
    ]
    assert read_wav(out / "first.wav").pcm == b"".join(
        expected_stream("First item.", None, {"chunk_samples": 500})
    )
    assert read_wav(out / "0003.wav").pcm == b"".join(
        expected_stream("Third item.", "zoe", {"seed": 5, "chunk_samples": 500})
    )
    written_at = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    requests_before = engine.requests_started

    second = await orpheus_trio(*args, "--param", "chunk_samples=500")
    assert second.returncode == 1
    assert "0 written, 3 skipped (already complete), 1 failed" in second.stderr.decode()
    assert (
        engine.requests_started == requests_before + 1
    )  # only the failed item was tried again
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written_at

    source.write_text(source.read_text().replace(', "params": {"error_after": 1}', ""))
    third = await orpheus_trio(*args, "--param", "chunk_samples=500", "--no-progress")
    assert third.returncode == 0, third.stderr.decode()
    assert (
        "1 written, 3 skipped" in third.stderr.decode()
        and "items  " not in third.stderr.decode()
    )
    assert (out / "0002.wav").exists()


async def test_batch_on_the_embedded_default_speaks_every_line(tmp_path: Path) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("Good morning.\nGood night.\n")
    done = await orpheus_trio("batch", source, "-d", tmp_path / "wav")
    assert done.returncode == 0, done.stderr.decode()
    for name in ("0001.wav", "0002.wav"):
        clip = read_wav(tmp_path / "wav" / name)
        assert (
            clip.format.sample_rate == 24_000
            and clip.duration_s > 0.4
            and clip.rms() > 0.02
        )


async def test_batch_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = await orpheus_trio("batch", tmp_path / "nope.txt")
    assert missing.returncode == 2 and "cannot read" in missing.stderr.decode()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "colour": "red"}\n')
    malformed = await orpheus_trio("batch", bad)
    assert (
        malformed.returncode == 2
        and "line 1: unknown key(s) colour" in malformed.stderr.decode()
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    nothing = await orpheus_trio("batch", empty)
    assert nothing.returncode == 2 and "holds no items" in nothing.stderr.decode()
