"""The teacher: its ladder of sizes and lengths, the best rung the budget buys, grown past its
share while a student keeps enough passes, and the teacher alone where no student pays."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from noisystudent.core import runs
from noisystudent.core.errors import UserError
from noisystudent.core.layout import CORRUPTIONS_KEY, REPORT_KEY, TEACHER_KEY

from .prices import (
    corruptions_seconds,
    fitted_students,
    grow_student,
    pile_seconds,
    report_seconds,
    scratch,
    teacher_seconds,
    timing_seconds,
)
from .rates import Rates
from .recipes import (
    ENOUGH_PASSES,
    FAMILY_NAMES,
    FLIP_REASON,
    MIN_PASSES,
    TEACHER_MAX_SIZE,
    TEACHER_MIN_SIZE,
    TEACHER_SHARE,
    TEACHER_UPSCALE,
)
from .survey import DataFacts
from .values import Plan

log = logging.getLogger(__name__)


def teacher_sizes(facts: DataFacts, upscale: int = 0) -> list[int]:
    """The teacher's candidate sizes, largest first: multiples of 32 from the images' stored
    size (rounded up; with ``upscale``, at least that) down to TEACHER_MIN_SIZE."""
    top = min(TEACHER_MAX_SIZE, max(TEACHER_MIN_SIZE, upscale,
                                    32 * math.ceil(facts.stored_size / 32)))
    return list(range(top, TEACHER_MIN_SIZE - 1, -32))


@dataclass(frozen=True)
class TeacherRung:
    """One teacher the plan can buy: a model, its input size and epochs, labels averaged over
    the mirror or not."""

    model: str
    size: int
    epochs: int
    flip: bool


def teacher_ladder(plan: Plan) -> list[TeacherRung]:
    """The teachers a budget can buy, cheapest first, each with better labels than the one
    before on the teacher table (BENCHMARKS.md, "The teacher table behind the plan"). Each
    size from 64 px up to TEACHER_UPSCALE px (or the images' own size, if larger): above the
    smallest, first for half the epochs (at 96 px 15 epochs gave labels 0.2 points below 30,
    in half the time, and 0.5 above 64 px's), then all of them, then with labels averaged over
    the mirror (one more labeling pass: +0.3 points at 64 and 96 px)."""
    model, epochs = plan.value("teacher.model"), plan.typed.teacher.epochs  # not a planned rung's
    sizes = [plan.value("teacher.image_size")] if plan.user_set("teacher.image_size") else \
        teacher_sizes(plan.facts, TEACHER_UPSCALE)[::-1]
    flips = (False, True) if can_flip(plan) else (plan.value("pseudo_label.flip"),)
    ladder = []
    for i, size in enumerate(sizes):
        if i and not plan.user_set("teacher.epochs"):
            ladder.append(TeacherRung(model, size, max(5, epochs // 2), flips[0]))
        ladder += [TeacherRung(model, size, epochs, flip) for flip in flips]
    return ladder


def can_flip(plan: Plan) -> bool:
    """Whether the plan may average the teacher's labels over the mirror: not where the user
    chose, and only for a teacher that learned mirrored images (its augment flips)."""
    return not plan.user_set("pseudo_label.flip") and plan.value("teacher.augment") != "none"


def choose_teacher(plan: Plan, rates: Rates | None, share: float = TEACHER_SHARE) -> None:
    """The teacher: the best rung of the ladder whose training and first labeling fit
    ``share`` of the budget (the whole of it, no labeling, for a teacher alone)."""
    facts = plan.facts
    if plan.value("teacher_run"):  # a finished teacher: its model and size are what they are
        try:
            info = runs.read_json(runs.require_run(plan.value("teacher_run"), runs.MODEL_INFO)
                                  / runs.MODEL_INFO)
        except (UserError, OSError, ValueError, KeyError):
            return  # the run says what is wrong with it
        plan.teacher = (info["model"], info["input"]["size"])
        return
    if plan.budget_minutes is None:  # the measured recipes' teacher, its labels flip-averaged
        plan.set("teacher.image_size", teacher_sizes(facts)[0],
                 f"the images' stored size ({facts.stored_size} px) rounded up to a multiple "
                 f"of 32, at least {TEACHER_MIN_SIZE} (a pretrained teacher lost 2.5 points at "
                 f"32 px) and at most {TEACHER_MAX_SIZE} (its weights' size)")
        if can_flip(plan) and not plan.user_set("teacher.image_size"):  # a teacher it chose
            plan.set("pseudo_label.flip", True, FLIP_REASON)
        return
    alone = share >= 1.0
    seconds = share * plan.budget.usable - (report_seconds(plan, rates) if alone else 0.0)
    ladder = teacher_ladder(plan)

    def cost(rung: TeacherRung, epochs: int | None = None) -> float:
        labeling = 0.0 if alone else pile_seconds(plan, rates, rung.size, rung.flip, rung.model)
        return teacher_seconds(plan, rates, rung.size, epochs or rung.epochs, rung.model) \
            + labeling

    fitting = []
    for i, rung in enumerate(ladder):
        if cost(rung) <= seconds:
            fitting.append(rung)
        elif not i or ladder[i - 1].size != rung.size:
            break  # a size whose cheapest rung does not fit: larger ones are not measured
    rung = fitting[-1] if fitting else ladder[0]
    where = "the whole budget (a teacher alone)" if alone else f"{share:.0%} of the budget"
    take_rung(plan, rung, f"the best teacher of the ladder (each size: half the epochs, all, "
              f"then flip-averaged labels) whose training and labeling fit {where} on this "
              f"machine ({seconds / 60:.1f} min)")
    if not fitting and not plan.user_set("teacher.epochs"):  # even the cheapest is too long
        fitted = rung.epochs
        while fitted > 5 and cost(rung, fitted) > seconds:
            fitted -= 5
        plan.set("teacher.epochs", fitted, f"the most (of {rung.epochs}) that fit {where} at "
                 "the smallest size")


def take_rung(plan: Plan, rung: TeacherRung, why: str) -> None:
    plan.set("teacher.model", rung.model, why)
    plan.set("teacher.image_size", rung.size,
             why + f"; small images are upscaled up to {TEACHER_UPSCALE} px, which paid on "
             "Fashion-MNIST's 28 px images at each step from 64 px")
    if rung.epochs != plan.value("teacher.epochs") or "teacher.epochs" in plan.values:
        plan.set("teacher.epochs", rung.epochs, why)  # one reason for the whole rung
    if can_flip(plan):
        plan.set("pseudo_label.flip", rung.flip, FLIP_REASON if rung.flip else
                 "averaging over the mirror (a second labeling pass) does not fit the budget")


def grow_teacher(plan: Plan, rates: Rates) -> None:
    """Past TEACHER_SHARE, the teacher climbs its ladder while a from-scratch student 1 keeps
    ENOUGH_PASSES, and the smallest rung gets all its epochs back while a student keeps
    MIN_PASSES: on a CPU whose students are fast and whose teacher is slow, a fixed share
    gave the teacher a third of its epochs and the students passes that buy nothing."""
    if plan.budget_minutes is None or plan.teacher or not scratch(plan) or any(
            plan.user_set(key) for key in ("student.passes", "student.steps_per_epoch",
                                           "students", "iterations")):
        return
    ladder = teacher_ladder(plan)
    now = TeacherRung(plan.teacher_model(), plan.teacher_size(), plan.value("teacher.epochs"),
                      bool(plan.value("pseudo_label.flip")))
    above = ladder[ladder.index(now) + 1:] if now in ladder else ladder
    if now.epochs < ladder[0].epochs:  # the smallest rung, shortened: its epochs first
        above = [dataclasses.replace(now, epochs=e)
                 for e in range(ladder[0].epochs, now.epochs, -5)][::-1] + ladder[1:]
    current = _trial(plan, now)
    larger = grow_student(current, rates, _students_seconds(current, rates, now))
    taken = None
    for rung in above:  # each costs more than the one before: the first that fails ends it
        trial = _trial(plan, rung)
        left = _students_seconds(trial, rates, rung)
        count, passes = fitted_students(trial, rates, left, "scratch")
        smallest = rung.size == ladder[0].size and rung.epochs <= ladder[0].epochs \
            and not rung.flip
        if passes[0] < (MIN_PASSES["scratch"] if smallest else ENOUGH_PASSES) \
                or (not smallest and count < 2) \
                or (larger and not grow_student(trial, rates, left)):
            break
        taken = rung, passes[0], smallest
    if taken:
        rung, passes, smallest = taken
        take_rung(plan, rung, f"past {TEACHER_SHARE:.0%} of the budget: the best teacher of "
                  f"the ladder that leaves student 1 its passes (at least "
                  + (f"{MIN_PASSES['scratch']:g}" if smallest else f"{ENOUGH_PASSES:g}, past "
                     "which it gains nothing") + "): the teacher's labels cap every student")


def _trial(plan: Plan, rung: TeacherRung) -> Plan:
    trial = dataclasses.replace(plan, values=dict(plan.values), reasons=dict(plan.reasons),
                                seconds=dict(plan.seconds))
    take_rung(trial, rung, "")
    return trial


def _students_seconds(trial: Plan, rates: Rates, rung: TeacherRung) -> float:
    """What the budget leaves the students and their labeling in ``trial`` (a copy with
    ``rung`` as its teacher: its report may be planned smaller)."""
    return trial.budget.usable - report_seconds(trial, rates) - timing_seconds(rates) \
        - teacher_seconds(trial, rates, rung.size, rung.epochs, rung.model)


def teacher_alone(plan: Plan, rates: Rates, passes: float, family: str) -> None:
    """No student pays in the budget: the teacher alone, the best the whole budget buys (the
    plan then says from what budget a student would pay: ``rules.make_plan``)."""
    why = (f"student 1 would get {passes:.2f} passes, under the {MIN_PASSES[family]:g} a "
           f"student {FAMILY_NAMES[family]} needs" if passes < MIN_PASSES[family] else
           f"its teacher would get {plan.value('teacher.epochs')} of "
           f"{plan.typed.teacher.epochs} epochs, and a student of a teacher that short ends "
           "below the teacher trained alone")
    plan.set("iterations", 0, f"no student pays in {plan.budget_minutes:g} min on this "
             f"machine ({why}): the teacher alone, and nothing is kept that no check could "
             "vouch for")
    for key in ("pseudo_label.max_images", "student.passes", "students"):  # no student
        plan.values.pop(key, None)
        plan.reasons.pop(key, None)
    choose_teacher(plan, rates, share=1.0)
    plan.seconds = {TEACHER_KEY: teacher_seconds(plan, rates, plan.teacher_size(),
                                                 plan.value("teacher.epochs")),
                    CORRUPTIONS_KEY: corruptions_seconds(plan, rates),
                    REPORT_KEY: report_seconds(plan, rates) - corruptions_seconds(plan, rates)}
    fill_with_teacher(plan, rates)


def fill_with_teacher(plan: Plan, rates: Rates) -> None:
    """The teacher alone, where its best rung leaves minutes over: its training given them
    (``teacher.minutes``), its schedule stretched to what its own pace buys in them, so the
    run uses its budget (the rung above did not fit)."""
    if plan.teacher or plan.user_set("teacher.epochs") or plan.user_set("teacher.minutes"):
        return
    epochs, planned = plan.value("teacher.epochs"), plan.seconds[TEACHER_KEY]
    left = plan.budget.usable - plan.seconds[REPORT_KEY] - plan.seconds.get(CORRUPTIONS_KEY, 0.0) \
        - (rates.spent if rates else 0.0)
    if left <= planned:
        return
    longer = epochs * left / planned  # about the epochs the minutes buy
    plan.set("teacher.minutes", round(left / 60, 2),
             f"the teacher alone fills the budget: {epochs} epochs take "
             f"{planned / 60:.1f} of {left / 60:.1f} min, so its schedule follows its own "
             f"pace for the rest (about {longer:.0f} epochs)")
    plan.seconds[TEACHER_KEY] = left
