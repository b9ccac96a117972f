"""The ``orpheus-trio`` command line: one module per sub-command, dispatched by :mod:`.dispatch`.

:func:`main` takes the signals before it imports anything: until the command
has loaded (and opened nothing yet) a Ctrl-C or SIGTERM ends the process on
the spot with the one line and exit 130. Only Python's own start-up, before
this package is reached (about 10 ms), is left to Python.
"""

from __future__ import annotations

import os

# signal's C core: ``signal`` itself imports enum first, milliseconds of a window.
import _signal  # type: ignore[import-not-found]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

__all__ = ["main"]

#: Written by the early handler; the same as :data:`.interrupt.INTERRUPTED_LINE` (a test checks).
_INTERRUPTED = b"orpheus-trio: interrupted\n"


def _leave(signum: int, frame: FrameType | None) -> None:
    os.write(2, _INTERRUPTED)
    os._exit(130)


def main(argv: Sequence[str] | None = None) -> int:
    """The process's entry point (``orpheus-trio``, ``python -m orpheus_trio``)."""
    for signum in (_signal.SIGINT, _signal.SIGTERM):
        if _signal.getsignal(signum) is not _signal.SIG_IGN:  # ignored at start (nohup): stays so
            _signal.signal(signum, _leave)
    from .dispatch import main as dispatch

    code: int = dispatch(argv)
    return code
