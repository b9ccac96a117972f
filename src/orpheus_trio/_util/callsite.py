"""Warnings shown at the user's line, however deep in the library they are issued.

A fixed ``stacklevel`` is right for one call path only: the same warning is
reached from ``open_stream`` (two frames down), ``stream`` and ``synthesize``
(several more, through async generators). Counting the library's own frames
instead points every path at the first frame outside the package.
(Python 3.12's ``skip_file_prefixes`` does this; 3.11 is supported.)
"""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

__all__ = ["warn_at_caller"]

#: The package root (this module sits one folder below it).
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` at the first frame (from here up) outside this package."""
    frame: FrameType | None = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
