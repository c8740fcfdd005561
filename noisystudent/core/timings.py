"""Wall time per step of a self-training run, kept across resumes in ``timings.json``: the
report's minutes column (and what a time budget plans from); and, for a run with a budget,
the seconds its plan gave each step (``plan.json``, written by ``plan/replan.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import distributed, runs

TIMINGS = runs.TIMINGS
PLAN_JSON = runs.PLAN_FILES[1]


@contextmanager
def timed(run: Path, step: Path) -> Iterator[None]:
    """Add the wall time of the block to ``step``'s entry (its path inside ``run``). An
    interrupted step's time counts too: the minutes were spent."""
    start = time.monotonic()
    try:
        yield
    finally:
        add(run, step, time.monotonic() - start)


# The plan aims below the budget: a step's estimate can be off by a few percent, and a run
# must never take more than its budget (nor, the students filling it, less than 95%).
AIM = 0.97


@dataclass(frozen=True)
class Budget:
    """A run's time budget: the one value the first plan, every re-plan, plan.json
    (``budget_minutes``) and the progress bars read."""

    minutes: float

    @property
    def seconds(self) -> float:
        return 60 * self.minutes

    @property
    def usable(self) -> float:
        """The seconds the plan fills: AIM of the budget."""
        return AIM * self.seconds

    @classmethod
    def of_run(cls, run: Path) -> Budget | None:
        """The budget a run's plan.json holds (None: a run without one)."""
        minutes = planned(run).get("budget_minutes")
        return cls(minutes) if minutes else None


# The running budget's end (time.monotonic), for the progress bars.
_clock: dict[str, object] = {}


def start_budget(run: Path, budget: Budget | None) -> None:
    """Count ``budget`` down from what the run's earlier sessions already spent."""
    _clock.clear()
    if budget:
        _clock.update(end=time.monotonic() + budget.seconds - sum(read(run).values()),
                      budget=budget)


def time_left() -> str:
    """" · M of B min left" for a progress bar, "" without a budget."""
    if not _clock:
        return ""
    left = (_clock["end"] - time.monotonic()) / 60
    return f" · {left:.1f} of {_clock['budget'].minutes:g} min left"


def add(run: Path, step: Path, seconds: float) -> None:
    if not distributed.is_main():
        return
    times = read(run)
    name = step_name(run, step)
    times[name] = times.get(name, 0.0) + seconds
    runs.write_json(Path(run) / TIMINGS, times)


def read(run: Path) -> dict[str, float]:
    path = Path(run) / TIMINGS
    return runs.read_json(path) if path.is_file() else {}


def step_name(run: Path, step: Path) -> str:
    try:
        return Path(step).relative_to(run).as_posix()
    except ValueError:  # a teacher_run outside the run
        return str(step)


def planned(run: Path) -> dict:
    """plan.json: a budgeted run's budget, the keys its plan set, the data it saw and the
    seconds planned per step; {} for a run without a budget."""
    path = Path(run) / PLAN_JSON
    return runs.read_json(path) if path.is_file() else {}
