"""Stop, pause and resume a running training from another thread (the GUI's child reads them
from its stdin, the command line from its signals); they take effect at the next step.

>>> control = RunControl()
>>> control.request_pause(); control.paused
True
>>> control.request_stop(); control.stopped, control.paused  # a stop also ends a pause
(True, False)
"""

from __future__ import annotations

import threading

__all__ = ["RunControl"]


class RunControl:
    """Thread-safe stop / pause / resume requests of one run (shared by a 3D run and its 2D
    pre-training, so that Stop and Pause act on whichever is training)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._running.set()

    def request_pause(self) -> None:
        self._running.clear()

    def request_resume(self) -> None:
        self._running.set()

    @property
    def stopped(self) -> bool:
        """A stop was requested."""
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        """A pause was requested and neither a resume nor a stop came since."""
        return not self._running.is_set() and not self._stop.is_set()

    def wait_for_resume(self, poll_s: float = 0.5) -> None:
        """Block until resumed or stopped."""
        while not self._running.wait(timeout=poll_s):
            pass
