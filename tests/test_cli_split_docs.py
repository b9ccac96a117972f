"""``--split sentences`` does what docs/cli.md and ``--help`` say: sentences are packed into pieces.

It does not send one request per sentence: it splits text of any length, and
packs whole sentences into pieces of up to 300 characters, so three short
sentences are still one request.
"""

from __future__ import annotations

import re
from pathlib import Path

from _support_cli import orpheus_trio
from _support_server import StartServer

from orpheus_trio.text.split import AUTO_SPLIT_CHARS, DEFAULT_MAX_CHARS, split_for_synthesis

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def sentences_mode_paragraph() -> str:
    text = " ".join(DOCS.read_text(encoding="utf-8").split())
    found = re.search(r"`--split sentences`[^`]*", text)
    assert found, "docs/cli.md no longer describes --split sentences"
    return found.group(0)


async def test_split_sentences_packs_short_sentences_into_one_request(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server()
    text = "One is short. Two is short. Three is short."
    done = await orpheus_trio(
        "speak", text, "-o", tmp_path / "x.wav", "--url", server.base_url, "--split", "sentences",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert server.engine.requests_started == 1  # type: ignore[attr-defined]


def test_split_sentences_pieces_hold_several_sentences_up_to_the_limit() -> None:
    text = " ".join(f"Sentence number {i} is about forty characters." for i in range(20))
    pieces = split_for_synthesis(text, "sentences")
    assert all(len(piece) <= DEFAULT_MAX_CHARS for piece in pieces)
    assert len(pieces) < 20 and all(piece.count(".") > 1 for piece in pieces)


def test_docs_say_sentences_are_packed_up_to_the_piece_limit() -> None:
    described = sentences_mode_paragraph()
    assert "packed" in described and f"{DEFAULT_MAX_CHARS} characters" in described, described


async def test_help_says_sentences_are_packed_up_to_the_piece_limit() -> None:
    done = await orpheus_trio("speak", "--help")
    help_text = " ".join(done.stdout.decode().split())
    assert f"split above {AUTO_SPLIT_CHARS} characters" in help_text
    packed = f"sentences packed up to {DEFAULT_MAX_CHARS} characters"
    assert f"sentences = split at any length into pieces of whole {packed}" in help_text, help_text
