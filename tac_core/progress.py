"""Progress reporting and cooperative cancellation shared by every long-running step.

The engine never draws anything: it calls ``progress(stage, done, total)`` and the app or CLI draws it.
Cancellation is cooperative: loops call :func:`check_cancel` between batches, so a cancelled step stops at
a batch boundary and leaves every file it wrote complete.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

ProgressFn = Callable[[str, int, int], None]


class Cancelled(Exception):
    """Raised inside a step when its :class:`CancelToken` was set."""


class CancelToken:
    """A flag another thread (or a signal handler) sets to stop a running step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def check_cancel(cancel: Optional[CancelToken]) -> None:
    if cancel is not None and cancel.cancelled:
        raise Cancelled("cancelled by the user")


def report(progress: Optional[ProgressFn], stage: str, done: int, total: int) -> None:
    """Call ``progress`` if there is one; keeps call sites free of ``if progress`` noise."""
    if progress is not None:
        progress(stage, int(done), int(total))
