"""Checking a requested torch device up front, with an error that says what to do.

Without this, asking a CPU-only torch for ``"cuda"`` fails deep inside the
first ``.to()`` with ``AssertionError: Torch not compiled with CUDA enabled``,
and a misspelt device with a list of twenty device types.
"""

from __future__ import annotations

import torch

__all__ = ["checked_device"]


def checked_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, or ``ValueError`` if this machine cannot use it."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(
                f"device {str(resolved)!r} asked for, but torch {torch.__version__} ({build}) "
                "sees no CUDA device: use device='cpu', or install a CUDA build of torch "
                "on a machine with an NVIDIA GPU"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(resolved)!r} asked for, but there are {count} CUDA devices (0..{count - 1})")
    return resolved
