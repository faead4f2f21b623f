"""The budget of a run: a step budget, a wall-clock budget, or both; the run ends at the first.

Everything a run does counts in its seconds except pauses: preparing the targets, the steps, the
validations, the checkpoints and the end-of-run choice of the post-processing. No step or
validation is started that would end past the time limit (:meth:`BudgetClock.fits`).

>>> now = [0.0]
>>> budget = BudgetClock(steps=100, time_limit=10.0, clock=lambda: now[0])
>>> now[0] = 4.0
>>> budget.tick(), budget.progress(step=20), budget.fits(5.0), budget.fits(7.0)
(4.0, 0.4, True, False)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["BudgetClock"]

logger = logging.getLogger(__name__)


class BudgetClock:
    """The steps and seconds of a run, pauses excluded.

    Parameters
    ----------
    steps : int, optional
        The step budget (None: time only).
    time_limit : float, optional
        The wall-clock budget in seconds (None: steps only).
    clock : callable
        Seconds (wall time by default; e.g. a CPU-time clock for measurements on a shared
        machine).
    """

    def __init__(self, *, steps: int | None, time_limit: float | None,
                 clock: Callable[[], float] = time.perf_counter):
        self.steps, self.time_limit, self.clock = steps, time_limit, clock
        #: seconds spent so far (as of the last :meth:`tick`)
        self.elapsed = 0.0
        #: seconds of a step: the last one's, or more while they grow (a slow average)
        self.step_s = 0.0
        self.start()

    def start(self) -> None:
        """(Re)start the clock: at the start of a run and after a pause."""
        self._t0, self._elapsed0 = self.clock(), self.elapsed

    def tick(self) -> float:
        """Update and return :attr:`elapsed`."""
        self.elapsed = self._elapsed0 + (self.clock() - self._t0)
        return self.elapsed

    def fits(self, seconds: float) -> bool:
        """Whether work of about ``seconds`` ends within the time budget (True without one)."""
        if self.time_limit is None:
            return True
        self.tick()
        fits = self.elapsed + seconds <= self.time_limit
        if not fits:
            logger.info("time limit: %.1f s left, not starting %.1f s of work",
                        self.time_limit - self.elapsed, seconds)
        return fits

    def left(self, step: int, next_s: float = 0.0) -> bool:
        """Whether another step of about ``next_s`` seconds is in the budget after ``step``."""
        if self.steps is not None and step >= self.steps:
            return False
        if self.time_limit is None:
            return True
        return self.elapsed < self.time_limit and self.fits(next_s)

    def progress(self, step: int) -> float:
        """How far the run is, 0 → 1: the larger of the steps and the seconds spent."""
        parts = []
        if self.steps:
            parts.append(step / self.steps)
        if self.time_limit:
            parts.append(self.elapsed / self.time_limit)
        return max(parts) if parts else 1.0

    def eta(self, step: int, rate: float) -> float | None:
        """Seconds left at ``rate`` steps per second (the first budget to end)."""
        etas = []
        if self.steps is not None and rate > 0:
            etas.append((self.steps - step) / rate)
        if self.time_limit is not None:
            etas.append(max(self.time_limit - self.elapsed, 0.0))
        return min(etas) if etas else None

    def record_step(self, seconds: float) -> None:
        """Account a step's duration in :attr:`step_s`: a step that took longer counts at
        once, a shorter one slowly (the next step is planned on the slow side)."""
        s = self.step_s
        self.step_s = seconds if s == 0 else max(seconds, 0.9 * s + 0.1 * seconds)
