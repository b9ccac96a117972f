"""The ``orpheus-trio`` command through a subprocess: speak, system, help, errors, exit codes."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest
import trio
from _support_cli import clean_env, orpheus_trio
from _support_server import StartServer

from orpheus_trio.audio import Clip, read_wav
from orpheus_trio.cli.options import parse_param
from orpheus_trio.server.engines.synthetic import expected_stream
from orpheus_trio.text.split import split_text


def assert_speech(clip: Clip, *, min_s: float, max_s: float = 10.0) -> None:
    """Real espeak speech: the Orpheus format, a plausible length, and not silence."""
    assert (
        clip.format.sample_rate,
        clip.format.channels,
        clip.format.sample_width,
    ) == (24_000, 1, 2)
    assert min_s <= clip.duration_s <= max_s
    assert clip.rms() > 0.02
    # Speech has quiet gaps and loud parts: not a constant tone or noise floor.
    assert int(abs(clip.to_numpy()).max()) > 8000


async def test_speak_on_the_embedded_default_writes_real_speech(tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    done = await orpheus_trio("speak", "Hello from Orpheus.", "-o", out)
    assert done.returncode == 0, done.stderr.decode()
    assert_speech(read_wav(out), min_s=0.6)
    report = done.stderr.decode()
    assert "time to first audio" in report and "s of audio" in report
    assert (
        "endpoint http://127.0.0.1:" in report and "(embedded espeak server)" in report
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "hello.wav"
    ]  # no temporary left behind
    assert done.stdout == b""


async def test_speak_to_stdout_gives_raw_pcm_or_a_streaming_wav(tmp_path: Path) -> None:
    raw = await orpheus_trio("speak", "Testing one two three.", "-o", "-", "-q")
    assert raw.returncode == 0, raw.stderr.decode()
    assert raw.stderr == b"" and raw.stdout[:4] != b"RIFF"
    assert_speech(Clip(raw.stdout), min_s=0.8)

    wav = await orpheus_trio(
        "speak", "Testing one two three.", "-o", "-", "--format", "wav", "-q"
    )
    assert wav.returncode == 0, wav.stderr.decode()
    assert (
        wav.stdout[:4] == b"RIFF"
        and struct.unpack("<I", wav.stdout[40:44])[0] == 0xFFFFFFFF
    )
    with wave.open(io.BytesIO(wav.stdout)) as reader:
        assert (
            reader.getframerate(),
            reader.getnchannels(),
            reader.getsampwidth(),
        ) == (24_000, 1, 2)
    assert_speech(Clip(wav.stdout[44:]), min_s=0.8)


async def test_a_wav_on_stdout_redirected_to_a_file_gets_its_real_sizes(
    tmp_path: Path,
) -> None:
    # `speak ... -o - --format wav > out.wav`: seekable, so the header is fixed
    # at the end; opened for appending (>>), it must stay untouched.
    out, appended = tmp_path / "out.wav", tmp_path / "appended.wav"
    command = [sys.executable, "-m", "orpheus_trio", "speak", "Testing one two.", "-o", "-"]
    with open(out, "wb") as stdout:
        done = await trio.run_process(
            [*command, "--format", "wav", "-q"], stdout=stdout, check=False, env=clean_env()
        )
    assert done.returncode == 0
    data = out.read_bytes()
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    assert struct.unpack("<I", data[40:44])[0] == len(data) - 44 > 0
    assert_speech(read_wav(out), min_s=0.5)

    appended.write_bytes(b"")
    with open(appended, "ab") as stdout:
        done = await trio.run_process(
            [*command, "--format", "wav", "-q"], stdout=stdout, check=False, env=clean_env()
        )
    assert done.returncode == 0
    data = appended.read_bytes()
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    assert len(data) > 44 + 24_000  # the audio follows the header, nothing written over it


async def test_speak_long_text_from_stdin_on_the_embedded_default(
    tmp_path: Path,
) -> None:
    text = "\n\n".join(["The quick brown fox jumps over the lazy dog. " * 5] * 3)
    out = tmp_path / "story.wav"
    done = await orpheus_trio("speak", "-", "-o", out, stdin=text.encode())
    assert done.returncode == 0, done.stderr.decode()
    assert_speech(read_wav(out), min_s=20, max_s=90)
    assert "3 pieces" in done.stderr.decode()


async def test_speak_through_url_is_byte_exact(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    out = tmp_path / "s.wav"
    done = await orpheus_trio(
        "speak", "Exact bytes please.", "-o", out, "--url", server.base_url,
        "--voice", "leo", "--param", "seed=7", "--param", "chunk_samples=1000", "--temperature", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    params = {"seed": 7, "chunk_samples": 1000}
    assert read_wav(out).pcm == b"".join(
        expected_stream("Exact bytes please.", "leo", params)
    )
    report = done.stderr.decode()
    assert f"endpoint {server.base_url}" in report and "embedded" not in report


async def test_speak_splits_long_text_into_ordered_pieces_byte_exact(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    text = "First sentence here. Second one follows! And a third? " * 8
    out = tmp_path / "long.wav"
    done = await orpheus_trio(
        "speak", text, "-o", out, "--format", "pcm", "--url", server.base_url, "--split", "sentences",
        "--param", "chunk_samples=800", "--prefetch", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    pieces = split_text(text)
    assert len(pieces) == 2
    expected = b"".join(
        b"".join(expected_stream(p, None, {"chunk_samples": 800})) for p in pieces
    )
    assert out.read_bytes() == expected
    assert f"{len(pieces)} pieces" in done.stderr.decode()


async def test_speak_uses_orpheus_urls_and_orpheus_key(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(api_keys=("sesame",))
    out = tmp_path / "k.wav"
    denied = await orpheus_trio(
        "speak", "Hi.", "-o", out, env=clean_env(ORPHEUS_URLS=f" {server.base_url} ,")
    )
    assert denied.returncode == 1
    assert "401 unauthorized" in denied.stderr.decode()
    assert not out.exists() and list(tmp_path.iterdir()) == []
    allowed = await orpheus_trio(
        "speak",
        "Hi.",
        "-o",
        out,
        env=clean_env(ORPHEUS_URLS=server.base_url, ORPHEUS_KEY="sesame"),
    )
    assert allowed.returncode == 0, allowed.stderr.decode()
    assert read_wav(out).pcm == b"".join(expected_stream("Hi.", None, {}))


async def test_failed_request_exits_1_with_the_reason_and_leaves_no_file(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    out = tmp_path / "never.wav"
    cut = await orpheus_trio(
        "speak",
        "Some words to say.",
        "-o",
        out,
        "--url",
        server.base_url,
        "--param",
        "error_after=2",
    )
    assert cut.returncode == 1
    assert "ServiceError: engine_error" in cut.stderr.decode()
    assert list(tmp_path.iterdir()) == []
    unknown = await orpheus_trio(
        "speak", "Hi.", "-o", out, "--url", server.base_url, "--param", "bogus=1"
    )
    assert unknown.returncode == 1
    assert (
        "invalid_param" in unknown.stderr.decode()
        and "bogus" in unknown.stderr.decode()
    )


async def test_ctrl_c_exits_130_and_leaves_no_file(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "orpheus_trio", "speak", "Waiting for audio.",
         "-o", str(out_dir / "never.wav"), "--url", server.base_url, "--param", "ttfb_ms=60000"],
        stderr=subprocess.PIPE,
        env=clean_env(),
        # A shell that starts pytest in the background ignores SIGINT; give the child the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert process.stderr is not None
    with trio.fail_after(20):
        while server.engine.requests_started == 0:  # type: ignore[attr-defined]
            await trio.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stderr = b""
        while chunk := await process.stderr.receive_some():
            stderr += chunk
        assert await process.wait() == 130
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    assert list(out_dir.iterdir()) == []


async def test_unreachable_service_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    done = await orpheus_trio(
        "speak", "Hi.", "-o", tmp_path / "x.wav", "--url", "http://127.0.0.1:9"
    )
    assert done.returncode == 1
    assert (
        "ConnectError" in done.stderr.decode()
        and "Traceback" not in done.stderr.decode()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["speak", "hi"], "the following arguments are required: -o/--output"),
        (["speak", "hi", "-o", "x.wav", "--bogus"], "unrecognized arguments: --bogus"),
        (
            ["speak", "hi", "-o", "x.wav", "--param", "novalue"],
            "expected key=value, got 'novalue'",
        ),
        (
            ["speak", "hi", "-o", "x.wav", "--url", "localhost:8000"],
            "expected http(s)://host[:port]",
        ),
        (["speak", "hi", "-o", "x.wav", "--format", "ogg"], "invalid choice: 'ogg'"),
        (
            ["speak", "hi", "-o", "x.wav", "--temperature", "warm"],
            "expected a number, got 'warm'",
        ),
        (["speak", "   ", "-o", "x.wav"], "the text is empty"),
        (
            ["speak", "hi", "-o", "x.wav", "--param", "text=other"],
            "not an engine parameter",
        ),
        (["batch", "f.txt", "--concurrency", "0"], "expected an integer >= 1"),
        (["system", "not-a-url"], "expected http(s)://host[:port]"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
async def test_bad_usage_exits_2_with_a_clear_message(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = await orpheus_trio(*args)
    assert done.returncode == 2, done.stderr.decode()
    assert message in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


@pytest.mark.parametrize("command", [[], ["speak"], ["batch"], ["system"], ["serve"]])
async def test_help_everywhere(command: list[str]) -> None:
    done = await orpheus_trio(*command, "--help")
    assert done.returncode == 0
    assert done.stdout.decode().startswith("usage: orpheus-trio")


async def test_system_prints_the_services_system_json(
    start_server: StartServer,
) -> None:
    server = await start_server()
    done = await orpheus_trio("system", server.base_url)
    assert done.returncode == 0, done.stderr.decode()
    info = json.loads(done.stdout)
    assert (
        info["engine"] == "synthetic"
        and info["sample_rate"] == 24_000
        and "leo" in info["voices"]
    )
    gone = await orpheus_trio("system", "http://127.0.0.1:9")
    assert gone.returncode == 1 and "ConnectError" in gone.stderr.decode()


async def test_system_without_url_describes_the_embedded_server() -> None:
    done = await orpheus_trio("system")
    assert done.returncode == 0, done.stderr.decode()
    assert b'"engine": "espeak"' in done.stdout


async def test_clear_error_when_espeak_cannot_load(tmp_path: Path) -> None:
    code = (
        "import sys, espeakng_loader\n"
        "espeakng_loader.get_library_path = lambda: '/nonexistent/libespeak-ng.so'\n"
        "from orpheus_trio.cli import main\n"
        f"sys.exit(main(['speak', 'Hello.', '-o', {str(tmp_path / 'h.wav')!r}]))\n"
    )
    done = await trio.run_process(
        [sys.executable, "-c", code],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=clean_env(),
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert (
        "espeak-ng could not be loaded" in err
        and "--url" in err
        and "pip install '.[server]'" in err
        and "Traceback" not in err
    )
    assert list(tmp_path.iterdir()) == []


async def test_output_to_a_folder_fails_cleanly(tmp_path: Path) -> None:
    done = await orpheus_trio("speak", "Hi.", "-o", tmp_path)
    assert done.returncode == 1 and "it is a folder" in done.stderr.decode()
    assert list(tmp_path.iterdir()) == []


async def test_audio_is_not_written_to_a_terminal() -> None:
    leader, follower = pty.openpty()
    try:
        done = await trio.run_process(
            [sys.executable, "-m", "orpheus_trio", "speak", "Hi.", "-o", "-"],
            stdout=follower,
            capture_stderr=True,
            check=False,
            env=clean_env(),
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2
    assert "standard output is a terminal" in done.stderr.decode()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("seed=3", ("seed", 3)),
        ("temperature=0.5", ("temperature", 0.5)),
        ("overrun=true", ("overrun", True)),
        ("voice_hint=null", ("voice_hint", None)),
        ("style=calm", ("style", "calm")),
        ('code="3"', ("code", "3")),
        ("expr=a=b", ("expr", "a=b")),
        ("limit=NaN", ("limit", "NaN")),
        (" key = [1, 2] ", ("key", [1, 2])),
        ("deep=" + "[" * 100_000, ("deep", "[" * 100_000)),
    ],
)
def test_param_values_are_read_as_json_when_they_parse(
    spec: str, expected: tuple[str, object]
) -> None:
    assert parse_param(spec) == expected
