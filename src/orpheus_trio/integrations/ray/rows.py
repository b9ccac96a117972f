"""The batch's input: a file of utterances read into checked rows (no Ray here).

Formats, by suffix: ``.jsonl`` (one JSON object a line), ``.csv`` (a header
row), ``.parquet``, anything else plain text (one utterance a line). Columns:
``text`` (required), ``id``, ``voice`` and the sampling parameters of
:class:`~orpheus_trio.local.llm.SamplingParams` (``temperature``, ``top_p``,
``top_k``, ``repetition_penalty``, ``max_tokens``, ``seed``).

A bad row never stops the batch: it comes back with ``error`` set (an empty
text, a text over the limit, an unknown voice, a bad parameter, bytes that are
not UTF-8, a missing ``text`` column, a bad or repeated id) and is recorded in
the manifest with that reason; the other rows go on.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...local.llm import DEFAULT_VOICES, InvalidParameter, SamplingParams

__all__ = ["DEFAULT_MAX_TEXT_CHARS", "InputRow", "read_rows", "parse_rows"]

#: The worker server's default limit, so a row that a server would refuse is refused here too.
DEFAULT_MAX_TEXT_CHARS = 8000
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "seed")
_INT_KEYS = frozenset({"top_k", "max_tokens", "seed"})
#: Ids name files: letters, digits, ``.``, ``_``, ``-``; no leading dot, no path.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
#: Where ``surrogateescape`` put a byte that is not UTF-8.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class InputRow:
    """One utterance to synthesize, or the reason it cannot be (``error``)."""

    id: str
    text: str
    voice: str  # "" for none: the model's default speaker
    params: dict[str, Any] = field(default_factory=dict)
    line: int = 0  # 1-based line (text, jsonl, csv) or row (parquet) in the input
    error: str = ""


def read_rows(
    path: Path,
    *,
    voice: str | None = None,
    voices: Collection[str] | None = DEFAULT_VOICES,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> list[InputRow]:
    """Every row of ``path`` (see the module docstring), in order, checked.

    ``voice`` is the default for rows without one; ``voices`` the known voices
    (``None``: any). ``OSError`` if the file cannot be read at all.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        records: Iterator[tuple[int, Mapping[str, Any] | str]] = enumerate(
            pq.read_table(path).to_pylist(), start=1
        )
        columns = set(pq.read_schema(path).names)
        return parse_rows(records, columns, voice=voice, voices=voices, max_text_chars=max_text_chars)
    # surrogateescape: a byte that is not UTF-8 fails its own row, not the file.
    content = path.read_bytes().decode("utf-8", errors="surrogateescape")
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content, newline=""))
        columns = set(reader.fieldnames or ())
        records = ((reader.line_num, dict(r)) for r in reader)
        return parse_rows(records, columns, voice=voice, voices=voices, max_text_chars=max_text_chars)
    lines = content.splitlines()
    if suffix in (".jsonl", ".ndjson"):
        records = ((n, _json_record(line)) for n, line in enumerate(lines, start=1) if line.strip())
        return parse_rows(records, None, voice=voice, voices=voices, max_text_chars=max_text_chars)
    records = ((n, {"text": line}) for n, line in enumerate(lines, start=1))
    return parse_rows(records, None, voice=voice, voices=voices, max_text_chars=max_text_chars)


def _json_record(line: str) -> Mapping[str, Any] | str:
    """The line's object, or why it is not one (a str)."""
    if _UNDECODABLE.search(line):
        return _not_utf8(line)
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not JSON: {error.msg} at column {error.colno}"
    if not isinstance(value, dict):
        return f"not a JSON object but {type(value).__name__}"
    return value


def _not_utf8(text: str) -> str:
    where = _UNDECODABLE.search(text)
    assert where is not None
    byte = ord(where.group()) - 0xDC00
    return f"not UTF-8: byte 0x{byte:02x} at character {where.start() + 1}"


def parse_rows(
    records: Iterator[tuple[int, Mapping[str, Any] | str]],
    columns: set[str] | None,
    *,
    voice: str | None = None,
    voices: Collection[str] | None = DEFAULT_VOICES,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> list[InputRow]:
    """Check ``(line, record)`` pairs (a record is a mapping, or the reason it is unreadable).

    ``columns``: the file's columns when it has a header (csv, parquet), so a
    missing ``text`` column is named as such.
    """
    rows: list[InputRow] = []
    seen: set[str] = set()
    for line, record in records:
        row_id = f"{line:06d}"
        if isinstance(record, Mapping) and record.get("id") not in (None, ""):
            row_id = str(record["id"])
        error = _check(record, columns, voice, voices, max_text_chars)
        if not _SAFE_ID.fullmatch(row_id):
            error = error or f"id {row_id[:60]!r} is not a file name (letters, digits, . _ - only)"
            row_id = f"{line:06d}"  # still recorded, under its line
        if row_id in seen:
            error = error or f"id {row_id!r} is repeated (first used on an earlier row)"
            row_id = f"{row_id}@{line}"
        seen.add(row_id)
        if error:
            text = record.get("text") if isinstance(record, Mapping) else None
            shown = _UNDECODABLE.sub("\ufffd", text) if isinstance(text, str) else ""
            rows.append(InputRow(row_id, shown, "", {}, line, error))
            continue
        assert isinstance(record, Mapping)
        chosen = record.get("voice") or voice or ""
        params = {k: _number(k, record[k]) for k in _SAMPLING_KEYS if record.get(k) not in (None, "")}
        rows.append(InputRow(row_id, str(record["text"]), str(chosen), params, line))
    return rows


def _check(
    record: Mapping[str, Any] | str,
    columns: set[str] | None,
    voice: str | None,
    voices: Collection[str] | None,
    max_text_chars: int,
) -> str:
    """Why ``record`` cannot be synthesized; "" when it can."""
    if isinstance(record, str):
        return record
    if columns is not None and "text" not in columns:
        return f"no text column (columns: {', '.join(sorted(columns)) or 'none'})"
    for key, value in record.items():
        if isinstance(value, str) and _UNDECODABLE.search(value):
            return f"{key}: {_not_utf8(value)}"
    text = record.get("text")
    if text is None:
        return "no text field"
    if not isinstance(text, str):
        return f"text must be a string, got {type(text).__name__}"
    if not text.strip():
        return "empty text"
    if len(text) > max_text_chars:
        return f"text has {len(text)} characters; the limit is {max_text_chars}"
    chosen = record.get("voice") or voice
    if chosen is not None and not isinstance(chosen, str):
        return f"voice must be a string, got {type(chosen).__name__}"
    if chosen and voices is not None and chosen not in voices:
        return f"unknown voice {chosen!r} (known: {', '.join(voices)})"
    try:
        given = {k: _number(k, record[k]) for k in _SAMPLING_KEYS if record.get(k) not in (None, "")}
        SamplingParams.from_params(given)
    except (InvalidParameter, ValueError) as error:
        return str(error)
    return ""


def _number(key: str, value: object) -> object:
    """CSV cells are strings: numbers are parsed; other values are left for the check to name."""
    if not isinstance(value, str):
        return value
    try:
        return int(value) if key in _INT_KEYS else float(value)
    except ValueError:
        return value
