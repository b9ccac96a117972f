"""Where checkpoints come from: a local directory, the hub's cache, or the hub.

Before anything slow is loaded, :func:`locate` looks at every piece (the
Orpheus model, its tokenizer, SNAC) at once. A name that is an existing
directory is a directory; an ``owner/name`` that is not is a hub id. A hub id
found in the local cache is loaded from it. One that is not needs the hub:
when the hub cannot be reached (``HF_HUB_OFFLINE=1``, or nothing answers at
``HF_ENDPOINT``) every such piece is named in one :class:`CheckpointsMissing`,
with the command that downloads it, instead of the hub client's retries
(26 s) ending in an error about the first one only.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import getproxies

__all__ = ["CheckpointsMissing", "Piece", "download_command", "hub_reachable", "locate"]

#: How long the reachability probe waits for a TCP connection to the hub (or the proxy).
PROBE_TIMEOUT_S = 3.0


class CheckpointsMissing(FileNotFoundError):
    """Checkpoints named by hub id are neither on this machine nor downloadable now."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One checkpoint to load: what it is (for messages), and the directory or hub id given."""

    role: str
    where: str | os.PathLike[str]
    #: A file every copy of it has, to find it in the hub's cache.
    marker: str = "config.json"


def is_hub_id(where: str | os.PathLike[str]) -> bool:
    """``owner/name`` (or ``name``) that is not a path on this machine."""
    if isinstance(where, os.PathLike):
        return False
    path = Path(where).expanduser()
    return (
        not path.exists()
        and not path.is_absolute()
        and not where.startswith((".", "~"))
        and len(path.parts) in (1, 2)
        and not (len(path.parts) == 2 and path.parent.is_dir())  # `models/x` with a local `models`
    )


def in_cache(repo: str, marker: str) -> bool:
    """Whether the hub's local cache holds ``repo`` (its ``marker`` file)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo, marker), str)


def hub_reachable() -> tuple[bool, str]:
    """Whether the hub can be asked, and if not why: offline mode, or no TCP connection."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(constants.ENDPOINT)
    proxy = getproxies().get(endpoint.scheme)
    target = urlsplit(proxy) if proxy else endpoint
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True, ""
    except OSError as error:
        through = f" (through the proxy {host}:{port})" if proxy else ""
        return False, f"{constants.ENDPOINT} cannot be reached{through}: {error.strerror or error}"


def download_command(repo: str) -> str:
    return f"hf download {repo} --local-dir models/{repo.rsplit('/', 1)[-1]}"


def locate(pieces: Sequence[Piece]) -> bool:
    """Check that every piece can be loaded; whether to load them with ``local_files_only``.

    ``True`` when the hub cannot be reached and every hub id is in the cache
    (so the loaders do not try the network); ``False`` when the hub may be
    asked (it is reachable, or no piece names it). Raises :class:`CheckpointsMissing`
    naming every hub id that is neither cached nor downloadable.
    """
    problems = [
        f"the {p.role} directory {str(p.where)!r} does not exist"
        for p in pieces
        if not is_hub_id(p.where) and not Path(p.where).expanduser().exists()
    ]
    hub_ids = [p for p in pieces if is_hub_id(p.where)]
    uncached = [p for p in hub_ids if not in_cache(str(p.where), p.marker)]
    reachable, why = hub_reachable() if hub_ids else (True, "")
    if uncached and not reachable:
        names = ", ".join(f"the {p.role} {str(p.where)!r}" for p in uncached)
        repos = dict.fromkeys(str(p.where) for p in uncached)
        problems.append(
            f"{names} {'is' if len(uncached) == 1 else 'are'} not on this machine and the hub "
            f"cannot be asked ({why}); download {'it' if len(repos) == 1 else 'them'} where "
            f"there is network: {'; '.join(map(download_command, repos))}; then pass the "
            "directories (--model, --snac) or copy the hub's cache (~/.cache/huggingface) here"
        )
    if problems:
        raise CheckpointsMissing(
            "; ".join(problems) + ' (see docs/local-llm.md, "Getting the real models")'
        )
    return bool(hub_ids) and not reachable
