"""Coverage-guided fuzzing of both frame decoders with atheris (libFuzzer).

The oracle is the one of tests/test_fuzz_frames.py: each input is cut into pieces
(the first bytes choose where) and fed to the Python and the Cython decoder; only
``ProtocolError`` / ``IncompleteStreamError`` may come out, and both decoders must
give equal frames, errors and counters. Any other exception or a difference is a
crash that libFuzzer saves as ``crash-*`` for replay (``python fuzz/atheris_frames.py crash-...``).

    pip install -e '.[fuzz]'            # atheris
    python fuzz/atheris_frames.py -max_total_time=600 -rss_limit_mb=2048 [corpus_dir]

Extra arguments go to libFuzzer (``-runs=N``, ``-max_len=N``, ``-jobs=N`` ...).
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    from orpheus_trio import frames
    from orpheus_trio.errors import IncompleteStreamError, ProtocolError

try:
    with atheris.instrument_imports():
        from orpheus_trio.protocol._fastframe import FastFrameDecoder
except ImportError:  # not built: fuzz the Python decoder alone (crashes, memory)
    DECODERS: list[Any] = [frames.PythonFrameDecoder]
else:
    DECODERS = [frames.PythonFrameDecoder, FastFrameDecoder]

LIMITS = (1, 16, 4096, frames.DEFAULT_MAX_LINE_BYTES)


def outcome(cls: Any, pieces: list[bytes], limit: int) -> tuple[Any, ...]:
    decoder = cls(max_line_bytes=limit)
    out: list[Any] = []
    error: Any = None
    try:
        for piece in pieces:
            out.extend(decoder.feed(piece))
        decoder.close()
    except ProtocolError as exc:
        error = exc
        try:
            decoder.feed(b"\n")
        except ProtocolError as again:
            if again != exc:
                raise AssertionError(
                    f"failed decoder changed its error: {again!r}"
                ) from None
        else:
            raise AssertionError("a failed decoder accepted more input")
    except IncompleteStreamError as exc:
        error = (str(exc), exc.chunks_received)
    return (
        out,
        error,
        decoder.finished,
        decoder.chunks_received,
        decoder.samples_received,
    )


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limit = LIMITS[fdp.ConsumeIntInRange(0, len(LIMITS) - 1)]
    cuts = sorted(
        fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 6))
    )
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    pieces, start = [], 0
    for cut in cuts:
        cut = min(cut, len(body))
        pieces.append(body[start:cut])
        start = cut
    pieces.append(body[start:])
    results = [outcome(cls, pieces, limit) for cls in DECODERS]
    for other in results[1:]:
        if other != results[0]:
            raise AssertionError(f"decoders differ:\n{results[0]!r}\n{other!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
