"""The rules: every value ``self-train`` plans where the user set none, each with its reason,
from the data's facts (``survey.py``), this machine's measured speed (``rates.py``) and, when
given, a time budget (``time_model.py``). The user's values are never changed. The rules and
the measurements behind them (benchmarks/HISTORY.md, "Recipes from the plan"):

- **Teacher**: the ImageNet-pretrained Lite0, at the images' stored size rounded up to a
  multiple of 32, never below 64 (at 32 px it lost 2.5 points on Fashion-MNIST) nor above
  224 (its weights' size); with a budget, the best rung of the teacher ladder whose training
  and first labeling fit in TEACHER_SHARE of it, and past that share while a from-scratch
  student 1 keeps ENOUGH_PASSES (its labels cap every student; more passes do not).
- **Student**: from scratch in the airbench family at the images' size (at most 32 px) when
  the images are small (stored under PHOTO_SIZE px) and the unlabeled pile is large (at
  least LARGE_PILE images); otherwise the teacher's pretrained model at the teacher's size
  (equal size, its ImageNet weights). At equal minutes on photos with 20 labels a class, the
  from-scratch student won by 1.1 points on 20,000 unlabeled images and lost by 1.7 on 2,000.
- **Length**: without a budget, the measured recipes' lengths (teacher 30 epochs; from-scratch
  students 3 and 4 passes; pretrained ones 5). With one, the students share what the
  teacher, the labeling and the report leave (``time_model.shares``), at the rates measured
  on this machine; one iteration when two would each get less than MIN_PASSES. A from-scratch
  student grows to the larger LARGE_SCRATCH_STUDENT where the budget gives it at least
  LARGE_STUDENT_PASSES: the small one ends at its labels' accuracy however long it trains.
- **Report**: with a budget, the corruption test gets at most REPORT_SHARE of it (fewer
  corrupted images, or none).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from noisystudent.core.config import SelfTrainConfig, SharedSettings
from noisystudent.core.settings_io import apply_overrides, build
from noisystudent.core.timings import Budget
from noisystudent.data.fashion_mnist import FASHION_MNIST

from .checks import check_data, check_teacher_fits, choose_data
from .rates import Rates
from .recipes import LARGE_PILE, TEACHER_MAX_SIZE
from .students import choose_lengths, choose_student, size_pile
from .survey import survey
from .teacher import choose_teacher, grow_teacher
from .values import Plan

log = logging.getLogger(__name__)


def make_plan(given: dict[str, Any], rates: Rates | None = None, *, says: bool = True) -> Plan:
    """The plan for a self-train config's ``given`` values (YAML and flags, not yet built).
    ``says``: where no student pays, say from what budget one would (not for a trial plan)."""
    typed = build(SelfTrainConfig, given)  # the user's values, checked and typed
    shared = {k: getattr(typed, k) for k in SharedSettings.model_fields}
    every_label = typed.data != FASHION_MNIST and "labels_per_class" not in given
    if every_label:
        shared["labels_per_class"] = 0
    facts = survey(shared, typed.unlabeled, large_pile=LARGE_PILE, unknown_size=TEACHER_MAX_SIZE)
    if typed.pseudo_label.max_images:  # only N are labeled
        facts = dataclasses.replace(facts, pile=min(facts.pile, typed.pseudo_label.max_images))
    check_data(facts, typed, shared["labels_per_class"])
    if typed.budget is not None and rates is None:
        rates = Rates(typed.device, typed.precision)
    plan = Plan(given, facts, Budget(typed.budget) if typed.budget else None, typed=typed,
                rates=rates)
    if every_label:
        plan.set("labels_per_class", 0, "your labeled images: every one is used")
    choose_data(plan)
    if plan.budget is not None and not plan.teacher and not plan.value("teacher_run"):
        check_teacher_fits(plan, rates)
    choose_teacher(plan, rates)
    choose_student(plan)
    if size_pile(plan, rates):  # the labeling a smaller pile saves can buy a better teacher
        choose_teacher(plan, rates)
        choose_student(plan)
        size_pile(plan, rates)
    grow_teacher(plan, rates)
    size_pile(plan, rates)  # a grown teacher leaves the students less
    choose_lengths(plan, rates)
    if says and plan.budget is not None and plan.values.get("iterations") == 0:
        least = smallest_paying_budget(plan)
        log.warning("plan: no student pays in %g min on this machine: the teacher alone is "
                    "trained%s", plan.budget_minutes,
                    f"; a student pays from about {least:g} min" if least else "")
    return plan


def smallest_paying_budget(plan: Plan) -> float | None:
    """The smallest budget (a round number of minutes) whose plan trains a student, at the
    rates this plan measured; None past 8x this one."""
    minutes = plan.budget_minutes
    while minutes < 8 * plan.budget_minutes:
        minutes = math.ceil(minutes * 1.25)
        given = apply_overrides(plan.given, {"budget": float(minutes)})
        trial = make_plan(given, plan.rates, says=False)
        if trial.value("iterations"):
            return float(minutes)
    return None


def planned_config(given: dict[str, Any]):
    """(the config a self-train run with the user's ``given`` values runs with, the plan
    that chose its unset values)."""
    plan = make_plan(given)
    config = build(SelfTrainConfig, plan.merged())
    return config, plan
