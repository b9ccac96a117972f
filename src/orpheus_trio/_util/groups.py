"""Users see single exceptions, not a nursery's one-member group around them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["single_exception"]


@contextmanager
def single_exception() -> Iterator[None]:
    """Re-raise the only exception of an exception group as itself (its cause kept).

    For nurseries whose other tasks end only by cancellation, so that a group
    can only wrap one real error. Groups of one nested in each other (nurseries
    within nurseries) are one error too. A group of several is left as it is:
    then several independent failures really are the answer.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        only: BaseException = group
        while isinstance(only, BaseExceptionGroup) and len(only.exceptions) == 1:
            only = only.exceptions[0]
        if only is group:
            raise
        raise only from only.__cause__
