"""The budget clock of a run: steps and seconds, pauses excluded, no step past the limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from napari_unet.core.training.budget import BudgetClock


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_pause_does_not_count():
    clock = FakeClock()
    budget = BudgetClock(steps=None, time_limit=10.0, clock=clock)
    clock.now = 3.0
    assert budget.tick() == 3.0
    clock.now = 100.0  # paused from 3 s to 100 s: the run restarts its clock on resume
    budget.start()
    clock.now = 104.0
    assert budget.tick() == pytest.approx(7.0)
    assert budget.left(step=5, next_s=2.0) and not budget.left(step=5, next_s=4.0)


@given(steps=st.integers(1, 50), step=st.integers(0, 60))
def test_the_step_budget_is_never_passed(steps, step):
    budget = BudgetClock(steps=steps, time_limit=None, clock=FakeClock())
    assert budget.left(step) == (step < steps)
    assert budget.progress(step) == pytest.approx(step / steps)


@given(limit=st.floats(1.0, 100.0), spent=st.floats(0.0, 200.0), work=st.floats(0.0, 50.0))
def test_no_work_is_started_that_would_end_past_the_limit(limit, spent, work):
    clock = FakeClock()
    budget = BudgetClock(steps=None, time_limit=limit, clock=clock)
    clock.now = spent
    budget.tick()
    assert budget.left(0, work) == (spent < limit and spent + work <= limit)
    assert budget.eta(0, rate=1.0) == pytest.approx(max(limit - spent, 0.0))


@given(times=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=30))
def test_a_slower_step_counts_at_once_a_faster_one_slowly(times):
    budget = BudgetClock(steps=1, time_limit=None, clock=FakeClock())
    for t in times:
        before = budget.step_s
        budget.record_step(t)
        assert budget.step_s >= t  # the next step is planned on the slow side
        if before:
            assert budget.step_s >= 0.9 * before + 0.1 * t - 1e-12
