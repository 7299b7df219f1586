"""SIGTERM during training: finish the epoch, checkpoint it, then stop like Ctrl-C.

The entry points turn SIGTERM into an immediate interrupt (`eibacl.cli`). Inside the epoch
loop that would lose every epoch since the last checkpoint, so the loop defers it: the first
SIGTERM only sets a flag; the loop finishes the epoch in progress (a checkpoint holds
epoch boundaries only, which is what keeps resume exact), writes a checkpoint, logs the
epoch and raises `Terminated`. A second SIGTERM stops at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: the MLflow run ends as KILLED and what was logged stays.
    It lives here, not in eibacl.cli, so the library never imports the command line."""


class StopFlag:
    """Set by the first SIGTERM; `requested` is read by the loop at each epoch's end."""

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise Terminated(f"signal {signum} (a second one: stopped at once)")
        self.requested = True
        log.warning(
            "SIGTERM: finishing this epoch, then a checkpoint and stop "
            "(a second SIGTERM stops at once)"
        )


@contextmanager
def deferred_sigterm() -> Iterator[StopFlag]:
    """A `StopFlag` set by SIGTERM while the block runs (main thread only, as Python allows
    handlers there; elsewhere SIGTERM keeps its handler and the flag stays unset)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, flag.handle)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
