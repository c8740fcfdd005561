"""A training length that follows the machine: a stage given ``minutes`` measures its own
steps over the warm-up, then fixes how many steps fit in the time left, and the cosine decays
over exactly those (Budgeted Training: a schedule that ends with its time, not one cut off).

The plan prices a student from a speed measured before it starts, and a shared 2-core machine
drifts: one core of one Xeon ran the same student's bare step at 963 and at 1,808 images/s in
two runs, so a length fixed in advance ran 35% short or 34% long. Measured on the student's
own steps, with its own noise, batches and loaders, the length is what the minutes buy.

The length is fitted once, at the end of the warm-up, whose learning rates do not depend on
the total: a replay given the fitted ``steps`` from the start trains exactly the same steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from noisystudent import distributed

# The first steps allocate memory and start loader workers: not the machine's pace.
SKIPPED_STEPS = 3
# Steps the pace is measured over, at least, where the warm-up is shorter.
LEAST_MEASURED = 10


class CosineWithWarmup:
    """Linear warmup then cosine to zero, a factor of each group's initial lr per step. A
    callable object, not a closure: LambdaLR saves its fields in the scheduler's state, so a
    resumed stage keeps a fitted total."""

    def __init__(self, total_steps: int, warmup_steps: int):
        self.total_steps, self.warmup_steps, self.fitted = total_steps, warmup_steps, False

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Pace:
    """Counts a stage's training seconds, fits ``schedule.total_steps`` to ``seconds`` once
    (``seconds`` 0: the total stays as set) and says when the total is reached."""

    schedule: CosineWithWarmup
    seconds: float = 0.0
    trained: float = 0.0            # seconds spent in training steps so far
    mark: tuple[int, float] | None = None  # (step, trained) where the measurement starts

    @property
    def fit_at(self) -> int:
        """The step after which the length is fitted: the warm-up's last, or enough to
        measure, never past the total first planned."""
        least = SKIPPED_STEPS + LEAST_MEASURED
        return min(max(self.schedule.warmup_steps, least), self.schedule.total_steps)

    def step_done(self, step: int, seconds: float) -> bool:
        """Step ``step`` (counted from 1) took ``seconds``; whether training goes on."""
        self.trained += seconds
        if self.seconds and not self.schedule.fitted:
            if step == min(SKIPPED_STEPS, self.fit_at - 1):
                self.mark = (step, self.trained)
            if step >= self.fit_at:
                self.fit(step)
        return step < self.schedule.total_steps

    def fit(self, step: int) -> None:
        start, before = self.mark or (0, 0.0)
        rate = (step - start) / max(self.trained - before, 1e-9)
        rate = distributed.mean_metrics({"steps_per_s": rate})["steps_per_s"]  # one length
        left = max(0.0, self.seconds - self.trained)
        self.schedule.total_steps = step + int(left * rate)
        self.schedule.fitted = True

    def state_dict(self) -> dict:
        return {"trained": self.trained, "mark": list(self.mark) if self.mark else None}

    def load_state_dict(self, state: dict) -> None:
        self.trained = float(state.get("trained", 0.0))
        self.mark = tuple(state["mark"]) if state.get("mark") else None
