"""The batch's manifest: one JSON line per finished row, the record a rerun resumes from.

A line is appended (and flushed to disk) only after the row's audio file has
been renamed into place, so a listed file is always complete; a run killed
midway leaves at worst files that no line lists, which the rerun writes again.
A rerun skips the rows listed as done whose file is still there and redoes the
rest (failed rows included). At the end of a run the manifest is rewritten
(to a temporary file, then renamed over) with one line per row, the latest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Self

__all__ = ["MANIFEST_NAME", "Manifest", "ManifestEntry"]

MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """What became of one row. ``path`` is relative to the output folder; "" when it failed."""

    id: str
    text: str
    voice: str
    path: str
    duration_s: float
    sample_rate: int
    tokens: int
    error: str

    @property
    def done(self) -> bool:
        return not self.error

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManifestEntry:
        return cls(
            id=str(data["id"]),
            text=str(data["text"]),
            voice=str(data["voice"]),
            path=str(data["path"]),
            duration_s=float(data["duration_s"]),
            sample_rate=int(data["sample_rate"]),
            tokens=int(data["tokens"]),
            error=str(data["error"]),
        )


class Manifest:
    """``out_dir/manifest.jsonl``: read at the start, appended to as rows finish, compacted at the end."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / MANIFEST_NAME
        self.entries: dict[str, ManifestEntry] = {}
        self._file: IO[str] | None = None
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = ManifestEntry.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill: its row is simply redone
                self.entries[entry.id] = entry

    def done(self, out_dir: Path) -> set[str]:
        """Ids listed as done whose audio file is still there."""
        return {
            e.id for e in self.entries.values() if e.done and (out_dir / e.path).is_file()
        }

    def __enter__(self) -> Self:
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def add(self, entry: ManifestEntry) -> None:
        assert self._file is not None, "use the manifest as a context manager"
        self.entries[entry.id] = entry
        self._file.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def add_all(self, entries: Iterable[ManifestEntry]) -> None:
        for entry in entries:
            self.add(entry)

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.compact()

    def compact(self) -> None:
        """Rewrite with one line per row (the latest), atomically."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("w", encoding="utf-8") as f:
            for entry in self.entries.values():
                f.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
