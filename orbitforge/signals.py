"""SIGTERM stops orbitforge the way Ctrl-C does.

A scheduler's preemption, `kill`, a container stop or a closed terminal session sends SIGTERM, and
background jobs ignore SIGINT, so without this such a stop lost the steps since the last
checkpoint and left COLMAP or nerfstudio running on.  Inside `terminate_as_interrupt()` SIGTERM
raises KeyboardInterrupt, so the same clean-up runs: trainers write a checkpoint to resume from,
worker processes are stopped, half-written stage folders are removed.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt; the previous handler comes back after.
    Only the main thread can set handlers, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
