"""The client side of compressed formats: ``tts.stream(..., format=...)`` and ``speak --format``."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from _support_cli import orpheus_trio
from _support_server import StartServer

from orpheus_trio import OrpheusTTS
from orpheus_trio.audio.formats import FORMATS
from orpheus_trio.server.engines.synthetic import expected_stream

TEXT = "Compressed on the client, as it arrives."


def decoded(data: bytes) -> tuple[float, bytes]:
    """Duration and s16 samples of an encoded file (PyAV)."""
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    seconds = sum(f.samples / f.sample_rate for f in frames)
    return seconds, b"".join(f.to_ndarray().astype("<i2").tobytes() for f in frames)


PCM = b"".join(expected_stream(TEXT, None, {}))
SECONDS = len(PCM) / 2 / 24000


@pytest.mark.parametrize("format", FORMATS)
async def test_stream_yields_the_chosen_format(format: str, start_server: StartServer) -> None:
    server = await start_server()
    async with OrpheusTTS(server.base_url, hedge_ttfb_ms=None) as tts:
        pieces = [piece async for piece in tts.stream(TEXT, format=format)]
        whole = await tts.synthesize(TEXT, format=format)
    data = b"".join(pieces)
    if format == "opus":  # each Ogg stream gets a random serial number
        assert decoded(data)[1] == decoded(whole)[1]
    else:
        assert data == whole
    if format == "pcm":
        assert data == PCM
        return
    assert len(pieces) > 1  # encoded as it came, not in one piece at the end
    seconds, samples = decoded(data)
    if format in ("wav", "flac"):
        assert samples == PCM
    else:
        assert SECONDS - 0.01 <= seconds <= SECONDS + 0.12


async def test_unknown_format_fails_before_any_request() -> None:
    async with OrpheusTTS("http://127.0.0.1:9", hedge_ttfb_ms=None) as tts:  # nothing listens
        with pytest.raises(ValueError, match="valid: mp3, opus, aac, flac, wav, pcm"):
            await tts.synthesize("hi", format="ogg")


@pytest.mark.parametrize(
    ("name", "flags", "lossless"),
    [
        ("out.mp3", [], False),  # the suffix picks the format
        ("out.ogg", [], False),  # .ogg is Opus
        ("out.flac", [], True),
        ("out.bin", ["--format", "aac"], False),
    ],
)
async def test_speak_writes_compressed_files(
    name: str, flags: list[str], lossless: bool, start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    out = tmp_path / name
    done = await orpheus_trio("speak", TEXT, "-o", out, "--url", server.base_url, *flags)
    assert done.returncode == 0, done.stderr.decode()
    seconds, samples = decoded(out.read_bytes())
    if lossless:
        assert samples == PCM
    else:
        assert SECONDS - 0.01 <= seconds <= SECONDS + 0.12
    assert f"{SECONDS:.2f} s of audio" in done.stderr.decode()
    assert [p.name for p in tmp_path.iterdir()] == [name]


async def test_speak_streams_mp3_to_stdout(start_server: StartServer) -> None:
    server = await start_server()
    done = await orpheus_trio(
        "speak", TEXT, "-o", "-", "--format", "mp3", "--url", server.base_url, "-q"
    )
    assert done.returncode == 0, done.stderr.decode()
    seconds, _ = decoded(done.stdout)
    assert SECONDS - 0.01 <= seconds <= SECONDS + 0.12
