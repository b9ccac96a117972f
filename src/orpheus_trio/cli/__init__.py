"""The ``orpheus-trio`` command line: one module per sub-command, dispatched by :mod:`.dispatch`."""

from .dispatch import main

__all__ = ["main"]
