"""Orpheus at dataset scale on Ray Data (the issue's ``orpheus_trio.ray``; the ``ray`` extra).

``from orpheus_trio.integrations.ray import BatchConfig, read_rows, run_batch``;
from the command line, ``orpheus-trio batch FILE --ray [ADDRESS] ...``. See
docs/batch.md. Ray itself is imported only when a batch runs.
"""

from .estimate import Estimate, estimate
from .manifest import MANIFEST_NAME, Manifest, ManifestEntry
from .pipeline import BatchConfig, BatchSummary, run_batch
from .rows import DEFAULT_MAX_TEXT_CHARS, InputRow, read_rows

__all__ = [
    "DEFAULT_MAX_TEXT_CHARS",
    "MANIFEST_NAME",
    "BatchConfig",
    "BatchSummary",
    "Estimate",
    "InputRow",
    "Manifest",
    "ManifestEntry",
    "estimate",
    "read_rows",
    "run_batch",
]
