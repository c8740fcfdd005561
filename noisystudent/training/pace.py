"""A training length that follows the machine: a stage given ``minutes`` measures its own
steps and fixes how many fit in the time left, and its cosine decays over exactly those
(Budgeted Training: a schedule that ends with its time, not one cut off). The minutes are the
step's wall time: what it spends outside its training steps (building the model, each epoch's
validation and checkpoint, the test and saving after the last step) is measured as it goes,
forecast for the rest (``outside``), and left out of the training's seconds.

The plan prices a student from a speed measured before it starts, and a shared 2-core machine
drifts: one core of one Xeon ran the same student's bare step at 963 and at 1,808 images/s in
two runs, so a length fixed in advance ran 35% short or 34% long. Measured on the student's
own steps, with its own noise, batches and loaders, the length is what the minutes buy.

The length is fitted at the end of the warm-up, whose learning rates do not depend on the
total, and fitted again at REFITS of the way, on the pace since the fit before (a neighbour's
load comes and goes: one student fitted at its warm-up ended 14% early). A refit bends the
decay where it stands, so the learning rate never jumps; the run records the bends, and a
replay given the fitted ``steps`` and ``bends`` trains the same learning rates step by step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from noisystudent.core import distributed

# The first steps allocate memory and start loader workers: not the machine's pace.
SKIPPED_STEPS = 3
# Steps the pace is measured over, at least, where the warm-up is shorter.
LEAST_MEASURED = 10
# The fractions of the decay at which the length is fitted again: the last one close to the
# end, where the pace since the fit before predicts the few seconds left best (a student
# fitted last at three quarters ended 6-8 s early on one core, 2026-12-07).
REFITS = (0.25, 0.5, 0.75, 0.9)


class CosineWithWarmup:
    """Linear warmup then cosine to zero, a factor of each group's initial lr per step. Where
    the total was fitted, the decay is in pieces (``segments``: [first step, progress there,
    the total it decays toward] each), so that every step's rate can be repeated. A callable
    object, not a closure: LambdaLR saves its fields in the scheduler's state, so a resumed
    stage keeps its fitted total and pieces."""

    def __init__(self, total_steps: int, warmup_steps: int, segments=()):
        self.total_steps, self.warmup_steps, self.fitted = total_steps, warmup_steps, False
        self.segments = [[int(a), float(p), int(t)] for a, p, t in segments]
        if self.segments:
            self.total_steps = self.segments[-1][2]

    def progress(self, step: int) -> float:
        """How far the decay is at ``step`` (0 at the warm-up's end, 1 at the total)."""
        start, done, total = self.warmup_steps, 0.0, self.total_steps
        for first, bent, toward in self.segments:
            if step >= first:
                start, done, total = first, bent, toward
        return done + (step - start) * (1.0 - done) / max(1, total - start)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, self.progress(step))))

    def refit(self, step: int, total: int) -> None:
        """Decay toward ``total`` from ``step`` on, from where the decay stands."""
        total, start = max(total, step), max(step, self.warmup_steps)
        if not self.segments and step > self.warmup_steps:  # the piece already trained
            self.segments.append([self.warmup_steps, 0.0, self.total_steps])
        self.segments.append([start, self.progress(start) if step > self.warmup_steps else 0.0,
                              total])
        self.total_steps = total


@dataclass
class Pace:
    """Counts a stage's training seconds and fits ``schedule.total_steps`` so that training
    and what the step spends outside it take ``seconds`` (0: the total stays as set), first at
    ``fit_at`` then at each of REFITS; says when the total is reached."""

    schedule: CosineWithWarmup
    seconds: float = 0.0
    # The step's seconds outside its training steps, spent and still to come, were it to
    # train ``total`` steps, given its ``trained`` seconds (engine.StepClock measures them).
    outside: Callable[[int, float], float] = lambda total, trained: 0.0
    trained: float = 0.0            # seconds spent in training steps so far
    mark: tuple[int, float] | None = None  # (step, trained) where the measurement starts
    refits: int = 0                 # how many of REFITS are done

    @property
    def fit_at(self) -> int:
        """The step after which the length is first fitted: the warm-up's last, or enough to
        measure, never past the total first planned."""
        least = SKIPPED_STEPS + LEAST_MEASURED
        return min(max(self.schedule.warmup_steps, least), self.schedule.total_steps)

    def step_done(self, step: int, seconds: float) -> bool:
        """Step ``step`` (counted from 1) took ``seconds``; whether training goes on."""
        self.trained += seconds
        if self.seconds:
            if not self.schedule.fitted:
                if step == min(SKIPPED_STEPS, self.fit_at - 1):
                    self.mark = (step, self.trained)
                if step >= self.fit_at:
                    self.fit(step)
                    self.schedule.fitted = True
            elif self.refits < len(REFITS) and \
                    self.schedule.progress(step) >= REFITS[self.refits] and \
                    step < self.schedule.total_steps:
                self.fit(step)
                self.refits += 1
        return step < self.schedule.total_steps

    def fit(self, step: int) -> None:
        """The total that the seconds left buy at the pace since the last measurement."""
        start, before = self.mark or (0, 0.0)
        rate = (step - start) / max(self.trained - before, 1e-9)
        rate = distributed.mean_metrics({"steps_per_s": rate})["steps_per_s"]  # one length
        left = self.seconds - self.trained

        def fits(total: int) -> bool:  # more steps, more epochs: their ends cost time too
            return (total - step) / rate + self.outside(total, self.trained) <= left

        low, high = step, step + int(max(0.0, left) * rate)
        while low < high:  # the most steps that fit
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        total = int(distributed.mean_metrics({"total": low})["total"])
        self.schedule.refit(step, total)
        self.mark = (step, self.trained)

    def state_dict(self) -> dict:
        return {"trained": self.trained, "mark": list(self.mark) if self.mark else None,
                "refits": self.refits}

    def load_state_dict(self, state: dict) -> None:
        self.trained = float(state.get("trained", 0.0))
        self.mark = tuple(state["mark"]) if state.get("mark") else None
        self.refits = int(state.get("refits", 0))
