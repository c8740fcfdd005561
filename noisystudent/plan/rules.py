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
from dataclasses import dataclass, field
from typing import Any

from noisystudent import runs
from noisystudent.config import SelfTrainConfig, SharedSettings, apply_overrides, build
from noisystudent.data.fashion_mnist import FASHION_MNIST
from noisystudent.data.splits import held_out
from noisystudent.errors import UserError
from noisystudent.layout import PLAN_KEY, REPORT_KEY, TEACHER_KEY, labels_key, student_key
from noisystudent.reports.robustness import CORRUPTION_TYPES, SEVERITIES
from noisystudent.timings import Budget

from .rates import Rates
from .survey import DataFacts, survey
from .time_model import (
    LEAST_PASSES,
    StudentPrices,
    StudentShape,
    evaluated_images,
    fit_passes,
    inference_rate,
    step_seconds,
    student_rate,
)
from .time_model import labeling_seconds as seconds_to_label

log = logging.getLogger(__name__)

# --- the thresholds ------------------------------------------------------------------------
# From scratch or pretrained (benchmarks/HISTORY.md, "Recipes from the plan"): on photos of 64-96 px
# with 20 labels a class, at equal minutes, a from-scratch cifar_airbench_s at 32 px beat a
# pretrained Lite0 at 64 px by 1.1 points on 20,000 unlabeled images and lost by 1.7 on 2,000.
PHOTO_SIZE = 96         # px: stored at least this, the images are photos a 32 px student blurs
LARGE_PILE = 20_000     # unlabeled images: at least this many, a from-scratch student pays
SMALL_IMAGE = 32        # px: the small-image family's input size
TEACHER_MIN_SIZE, TEACHER_MAX_SIZE = 64, 224
# The guard's validation images (keep.py): 10% of each class's labels, at least this many a
# class, but never more than MAX_HELD_OUT of them. At 10 labels a class, 3 held out make 30
# images, on which a student trained on shuffled labels (10% right) against a 70% teacher is
# below the teacher whatever the draw; a 10-point fall is caught about 5 times in 6. Holding out
# 10% cost a Lite0 teacher nothing measurable at 25 and 100 labels a class at 64 px and 0.55
# points at 96 px (BENCHMARKS.md, "What the held-out 10% costs the teacher").
GUARD_PER_CLASS = 3
DEFAULT_HELD_OUT, MAX_HELD_OUT = 0.1, 0.3
TEACHER_SHARE = 0.35    # of the budget: the teacher's training and its labeling
# Passes past which a from-scratch student 1 gains nothing, so the minutes go to the teacher:
# on one Lite0 @64 teacher (85.70%), student 1 reached 87.31% at 1.8 passes, 88.43% at 6.6
# and 88.26% at 20.4 (benchmarks/HISTORY.md, "The plan before the teacher ladder"); every student
# ends 1-2 points above its labels, so the teacher's labels decide the end.
ENOUGH_PASSES = 6.0
# A small image's teacher upscales to at most this: on Fashion-MNIST (28 px) 64 -> 96 px gave
# +1.0 point of label accuracy; 128 px gave -0.26 and +0.56 in two measurements for twice the
# minutes (BENCHMARKS.md, "The teacher table behind the plan").
TEACHER_UPSCALE = 96
REPORT_SHARE = 0.08     # of the budget: the corruption test
MIN_PASSES = {"scratch": 2.0, "pretrained": 1.0}
# Student 1's passes the pile is sized for, and the smallest pile it is cut to: a labeling of
# an image costs about one pass of a small student over it, and a from-scratch student pays
# only on a large pile (LARGE_PILE), where 2 passes are its minimum and 6 gain all it can.
PILE_PASSES = {"scratch": 3.0, "pretrained": 2.0}
SMALLEST_PILE = {"scratch": 20_000, "pretrained": 1_000}
FAMILY_NAMES = {"scratch": "from scratch", "pretrained": "from pretrained weights"}
SCRATCH_PASSES = (3.0, 4.0)  # the airbench CPU recipe's students (no budget)
# Warm-up steps a from-scratch student gets at least: with 21 steps up to lr 0.8, a student
# of 1.1 passes collapsed (46.5%, below its 81% teacher); with 63 it reached 84.6%
# (benchmarks/HISTORY.md, "A short student's warm-up").
MIN_WARMUP_STEPS = 60
CORRUPTED = CORRUPTION_TYPES * len(SEVERITIES)  # corrupted images per test image
MIN_CORRUPTION_IMAGES = 200

# The from-scratch student: configs/fashion-mnist-1000-airbench-cpu.yaml's (BENCHMARKS.md,
# "The CPU recipe on the airbench family").
SCRATCH_STUDENT = {
    "model": "cifar_airbench_s", "pretrained": "none", "model_options": {"flip_tta": True},
    "batch_size": 128, "unlabeled_ratio": 3, "loss_weighting": "per-image",
    "optimizer": "sgd", "lr": 0.8, "momentum": 0.9, "weight_decay": 0.0001,
    "norm_bias_lr_scale": 64, "warmup_epochs": 0.5, "label_smoothing": 0.2,
    "augment": "randaugment", "randaugment_ops": 2, "randaugment_magnitude": 9,
    "padding": "reflect", "drop_rate": 0.2, "drop_path_rate": 0.0, "ema_decay": 0.99,
    "epochs": 4,
}
# The larger from-scratch student: configs/fashion-mnist-1000-cpu.yaml's (BENCHMARKS.md, "Noisy
# Student with small-image students"): two cifar_resnet20 of 12 and 17 passes reached 89.82 ±
# 0.22% on Fashion-MNIST where two cifar_airbench_s end near 88.9% at any length (6.6 + 45 and
# 20 + 102 passes: 88.87 and 88.90%); at 6 passes (one iteration) it only equals the small
# student at 8 (88.57% against 88.45-88.67%), and under the 60m plan (seed 0) student 1 of 8.7
# passes equalled the small one of 7.8 (88.66 against 88.67%) and student 2 ended 0.58 above
# the 30m run (89.47%). So it is taken where student 1 gets at least LARGE_STUDENT_PASSES (8,
# not 10: at 60m on a Zen 4 it gets 9.6-11.2 as the measured speeds drift, and a rule that
# flips on that drift plans two seeds differently), and student 2 learns student 1's labels
# sharpened to T = 0.5.
LARGE_SCRATCH_STUDENT = {
    "model": "cifar_resnet20", "pretrained": "none", "model_options": {},
    "batch_size": 64, "unlabeled_ratio": 3, "loss_weighting": "per-image",
    "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005,
    "norm_bias_lr_scale": 1.0, "warmup_epochs": 0.5, "label_smoothing": 0.1,
    "augment": "randaugment", "randaugment_ops": 2, "randaugment_magnitude": 15, "cutout": 8,
    "padding": "reflect", "drop_rate": 0.2, "drop_path_rate": 0.1, "ema_decay": 0.999,
    "epochs": 12,
}
LARGE_STUDENT_PASSES = 8.0
LATER_TARGET_TEMPERATURE = 0.5  # the larger recipe's student 2 (+0.08 paired, never below)


FLIP_REASON = ("the teacher learned mirrored images, so its labels average each image and its "
               "mirror (+0.3 points of label accuracy on Fashion-MNIST at 64 and 96 px, for a "
               "second labeling pass)")


# --- the plan --------------------------------------------------------------------------------

@dataclass
class Plan:
    """Planned values (dotted keys) with their reasons, over what the user ``given``."""

    given: dict[str, Any]
    facts: DataFacts
    budget: Budget | None = None
    typed: Any = None  # the config of the user's values alone (for their types)
    teacher: tuple[str, int] | None = None  # a teacher_run's (model, size)
    rates: Rates | None = None
    values: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # planned time per step
    short: list[str] = field(default_factory=list)  # students planned under their minimum
    whole_pile: int = 0  # the unlabeled images there are, where the plan labels fewer

    @property
    def budget_minutes(self) -> float | None:
        return self.budget.minutes if self.budget else None

    def value(self, key: str) -> Any:
        """What the run will use: the planned value where the plan set one, else the user's
        or the default (typed)."""
        if key in self.values:
            return self.values[key]
        node = self.typed
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def teacher_model(self) -> str:
        return self.teacher[0] if self.teacher else self.value("teacher.model")

    def teacher_size(self) -> int:
        return self.teacher[1] if self.teacher else self.value("teacher.image_size")

    def set(self, key: str, value: Any, reason: str) -> None:
        if _lookup(self.given, key) is _MISSING:
            self.values[key] = value
            self.reasons[key] = reason

    def user_set(self, key: str) -> bool:
        return _lookup(self.given, key) is not _MISSING

    def merged(self) -> dict[str, Any]:
        """The config's values: the planned ones, with the user's over them."""
        return apply_overrides(self.given, {k: v for k, v in self.values.items()})


_MISSING = object()


def _lookup(values: dict, dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def make_plan(given: dict[str, Any], rates: Rates | None = None) -> Plan:
    """The plan for a self-train config's ``given`` values (YAML and flags, not yet built)."""
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
    return plan


# The shortest budget worth timing this machine for: a teacher's epochs, a labeling and a
# report do not fit in less on any machine measured.
SHORTEST_BUDGET = 1.0


def check_data(facts: DataFacts, typed: SelfTrainConfig, per_class: int) -> None:
    """Bad input fails here, in one line, before any model is timed or trained."""
    where = typed.data
    if facts.classes == 0 or facts.labeled + facts.val == 0:
        raise UserError(f"no labeled images in {where}: give a folder with one subfolder of "
                        "images per class, a CSV manifest (path,label) or 'fashion-mnist'")
    if facts.classes == 1:
        raise UserError(f"{where} holds one class only: a classifier needs at least two "
                        "(one subfolder of images per class)")
    if per_class and facts.labeled + facts.val < per_class * facts.classes:
        raise UserError(f"labels_per_class {per_class}: some class of {where} holds fewer "
                        f"images, and {per_class} are needed a class; lower "
                        "--labels-per-class")
    if not facts.pile and not typed.teacher_run:
        source = typed.unlabeled or f"the labeled pool of {where} (every image has a label)"
        raise UserError(f"no unlabeled images in {source}: self-training needs a pile to "
                        "pseudo-label (--unlabeled FOLDER), or train a model with 'train'")
    if typed.budget is not None and typed.budget < SHORTEST_BUDGET:
        raise UserError(f"a budget of {typed.budget * 60:.0f} s is too short to train a "
                        f"teacher: give at least {SHORTEST_BUDGET:g} min (--budget 5m)")


def check_teacher_fits(plan: Plan, rates: Rates) -> None:
    """Under a budget, the cheapest teacher must fit it, else one line says from what budget
    it would."""
    rung = teacher_ladder(plan)[0]
    least = teacher_seconds(plan, rates, rung.size, 5, rung.model) + report_seconds(plan, rates)
    if least > plan.budget.usable:
        raise UserError(f"a budget of {plan.budget_minutes:g} min is too short to train a "
                        f"teacher on this machine: the smallest ({rung.model} at {rung.size} "
                        f"px, 5 epochs) takes about {least / 60:.1f} min; give at least "
                        f"--budget {math.ceil(least / 60 / 0.97 + 0.5):d}m")


def validation_fraction(per_class: float) -> float:
    """The share of each class's labels the guard holds out: 10%, raised to GUARD_PER_CLASS
    images a class where the labels are few, at most MAX_HELD_OUT of them."""
    return min(MAX_HELD_OUT, max(DEFAULT_HELD_OUT, GUARD_PER_CLASS / max(per_class, 1)))


def validation_per_class(per_class: int) -> int:
    """Validation images the plan holds out of a class of ``per_class`` labels."""
    return held_out(per_class, validation_fraction(per_class))


def choose_data(plan: Plan) -> None:
    facts = plan.facts
    if facts.classes and not plan.user_set("val_fraction") \
            and not plan.user_set("val_per_class"):
        per_class = (facts.labeled + facts.val) / facts.classes
        fraction = round(validation_fraction(per_class), 3)
        val = facts.classes * held_out(round(per_class), fraction)
        plan.set("val_fraction", fraction,
                 f"the guard: {val} labeled images held out ({fraction:.0%} of each class's, at "
                 f"least {GUARD_PER_CLASS} a class where that is at most "
                 f"{MAX_HELD_OUT:.0%}) on which every student must be no worse than its "
                 f"teacher to be kept: a student trained on shuffled labels is caught at 10 "
                 f"labels a class (tests/test_selftrain.py)")
        plan.facts = dataclasses.replace(facts, labeled=facts.labeled + facts.val - val,
                                         val=val)
        facts = plan.facts
    if plan.value("data") != FASHION_MNIST and facts.grayscale:
        plan.set("channels", 1, "the images are gray: read with one channel (a third of the "
                 "memory)")


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


def timing_seconds(rates: Rates | None) -> float:
    """The budget's seconds spent timing this machine: what the plan measured."""
    return rates.spent if rates is not None else 0.0


def scratch(plan: Plan) -> bool:
    """Whether the students learn from scratch in a small-image family (the user's model,
    else the rule)."""
    if plan.user_set("student_models"):
        return plan.value("student_models")[0].startswith("cifar_")
    if plan.user_set("student.model"):
        return plan.value("student.model").startswith("cifar_")
    return plan.facts.stored_size < PHOTO_SIZE and plan.facts.pile >= LARGE_PILE


def choose_student(plan: Plan) -> None:
    facts = plan.facts
    if plan.user_set("student.model") or plan.user_set("student_models"):
        if scratch(plan):
            plan.set("student.pretrained", "none", "a small-image model has no ImageNet weights")
            plan.set("student.image_size", min(facts.stored_size, SMALL_IMAGE),
                     "a small-image model at the images' size (at most 32 px)")
        else:
            plan.set("student.image_size", plan.teacher_size(),
                     "the teacher's size")
        return
    if scratch(plan):
        why = (f"the images are small ({facts.stored_size} px < {PHOTO_SIZE}) and the pile is "
               f"large ({facts.pile:,} >= {LARGE_PILE:,}): a small-image student from scratch "
               "learns most per minute (+1.1 points on 20,000 photos)")
        for key, value in SCRATCH_STUDENT.items():
            plan.set(f"student.{key}", value, why if key == "model" else
                     "the airbench family's (configs/fashion-mnist-1000-airbench-cpu.yaml)")
        plan.set("student.image_size", min(facts.stored_size, SMALL_IMAGE),
                 f"the family's size: the images' own, at most {SMALL_IMAGE} px")
        if facts.grayscale:
            plan.set("student.in_chans", 1, "the images are gray")
        return
    small = facts.pile < LARGE_PILE
    why = (f"the pile is small ({facts.pile:,} < {LARGE_PILE:,}): a pretrained student of the "
           "teacher's size (from scratch: -1.7 points on 2,000 photos)" if small else
           f"the images are photos ({facts.stored_size} px >= {PHOTO_SIZE}): a pretrained "
           "student of the teacher's size keeps their detail")
    plan.set("student.model", plan.teacher_model(), why)
    plan.set("student.pretrained", "offline", "ImageNet weights, as the teacher")
    plan.set("student.image_size", plan.teacher_size(), "the teacher's size")


def choose_lengths(plan: Plan, rates: Rates | None) -> None:
    family = "scratch" if scratch(plan) else "pretrained"
    if any(plan.user_set(key) for key in ("student.passes", "student.steps_per_epoch",
                                          "students")):
        return  # the user chose the students' lengths
    if plan.budget_minutes is None:
        if family == "scratch" and "student.model" in plan.values and \
                not plan.user_set("iterations"):
            plan.set("iterations", 2, "two iterations hold the recipe's gain (+1.8, then +0.3)")
            plan.set("student.passes", SCRATCH_PASSES[0], "the airbench recipe's student 1")
            plan.set("students", [{}, {"passes": SCRATCH_PASSES[1]}],
                     "the airbench recipe's student 2 is longer")
            plan_warmups(plan, SCRATCH_PASSES)
        return
    report = report_seconds(plan, rates)
    teacher = teacher_seconds(plan, rates, plan.teacher_size(), plan.value("teacher.epochs"))
    left = plan.budget.usable - teacher - report - timing_seconds(rates)
    large = grow_student(plan, rates, left)
    count, passes = fitted_students(plan, rates, left, family)
    if passes[0] < MIN_PASSES[family] and not plan.user_set("iterations"):
        teacher_alone(plan, rates, passes[0], family)
        return
    plan.set("iterations", count, "two students each long enough fit the budget" if count == 2
             else "one student: two would each get too few passes in the budget")
    plan.set("student.passes", round(passes[0], 2), "what the budget leaves, at this "
             "machine's measured speed")
    if count > 1:
        later = {"target_temperature": LATER_TARGET_TEMPERATURE} if large else {}
        plan.set("students", [{}] + [{"passes": round(p, 2), **later} for p in passes[1:]],
                 "the later students 4/3 as long: they learn from better labels" +
                 (f"; sharpened to T = {LATER_TARGET_TEMPERATURE}, as in the larger student's "
                  "recipe" if large else ""))
    plan_warmups(plan, passes[:count])
    plan.seconds[TEACHER_KEY] = teacher
    for k in range(1, count + 1):
        plan.seconds[labels_key(k)] = labeling_seconds(plan, rates, k)
        plan.seconds[student_key(k)] = student_seconds(plan, rates, passes[k - 1])
    plan.seconds[REPORT_KEY] = report
    plan.seconds[PLAN_KEY] = timing_seconds(rates)
    plan.short = [student_key(k) for k in range(1, count + 1)
                  if passes[k - 1] < MIN_PASSES[family]]  # the user's iterations only


def size_pile(plan: Plan, rates: Rates | None) -> bool:
    """Under a budget, the pile labeled: the whole of it where student 1 gets PILE_PASSES of
    it, else the most images that leave it those passes (at least SMALLEST_PILE), spread
    evenly over the pile (``pseudo_label.max_images``). Whether it shrank."""
    if plan.budget is None or plan.user_set("pseudo_label.max_images") or any(
            plan.user_set(key) for key in ("student.passes", "student.steps_per_epoch",
                                           "students", "iterations")):
        return False
    family = "scratch" if scratch(plan) else "pretrained"
    full, target = plan.facts.pile, PILE_PASSES[family]
    whole = plan.whole_pile or full
    left = plan.budget.usable - report_seconds(plan, rates) - timing_seconds(rates) \
        - teacher_seconds(plan, rates, plan.teacher_size(), plan.value("teacher.epochs"))

    def first_passes(pile: int) -> float:
        trial = dataclasses.replace(plan, facts=dataclasses.replace(plan.facts, pile=pile),
                                    values=dict(plan.values), reasons=dict(plan.reasons))
        return fitted_students(trial, rates, left, family)[1][0]

    if first_passes(full) >= target:
        return False
    pile = full
    floor = min(full, SMALLEST_PILE[family])
    while pile > floor:
        pile = max(floor, int(pile * 0.8) // 100 * 100)
        if first_passes(pile) >= target:
            break
    if pile == plan.value("pseudo_label.max_images"):
        return False
    plan.set("pseudo_label.max_images", pile,
             f"what the students can learn from in the budget: student 1 gets {target:g} "
             f"passes over {pile:,} of the {whole:,} unlabeled images"
             + (f" (at least {floor:,})" if pile == floor < full else "")
             + "; labeling an image costs about a pass over it, so the minutes go to passes; "
             "the images are spread evenly over the pile and the selection balances classes")
    plan.whole_pile = whole
    plan.facts = dataclasses.replace(plan.facts, pile=pile)
    return True


def teacher_alone(plan: Plan, rates: Rates, passes: float, family: str) -> None:
    """No student pays in the budget: the teacher alone, the best the whole budget buys, and
    one line that says from what budget a student would pay."""
    plan.set("iterations", 0, f"no student pays in {plan.budget_minutes:g} min on this "
             f"machine (student 1 would get {passes:.2f} passes, under the "
             f"{MIN_PASSES[family]:g} a student {FAMILY_NAMES[family]} needs): the teacher "
             "alone, and nothing is kept that no check could vouch for")
    for key in ("pseudo_label.max_images", "student.passes", "students"):  # no student
        plan.values.pop(key, None)
        plan.reasons.pop(key, None)
    choose_teacher(plan, rates, share=1.0)
    plan.seconds = {TEACHER_KEY: teacher_seconds(plan, rates, plan.teacher_size(),
                                                 plan.value("teacher.epochs")),
                    REPORT_KEY: report_seconds(plan, rates)}
    fill_with_teacher(plan, rates)
    least = smallest_paying_budget(plan)
    log.warning("plan: no student pays in %g min on this machine: the teacher alone is "
                "trained%s", plan.budget_minutes,
                f"; a student pays from about {least:g} min" if least else "")


def fill_with_teacher(plan: Plan, rates: Rates) -> None:
    """The teacher alone, where its best rung leaves minutes over: its training given them
    (``teacher.minutes``), its schedule stretched to what its own pace buys in them, so the
    run uses its budget (the rung above did not fit)."""
    if plan.teacher or plan.user_set("teacher.epochs") or plan.user_set("teacher.minutes"):
        return
    size, epochs = plan.teacher_size(), plan.value("teacher.epochs")
    planned = plan.seconds[TEACHER_KEY]
    left = plan.budget.usable - plan.seconds[REPORT_KEY] - (rates.spent if rates else 0.0)
    if left <= planned:
        return
    longer = epochs * left / planned  # about the epochs the minutes buy
    infer = rates.inference(plan.teacher_model(), size, 3)
    fixed = step_seconds(evaluated_images(plan.facts.test, plan.facts.val, longer), infer)
    plan.set("teacher.minutes", round((left - fixed) / 60, 2),
             f"the teacher alone fills the budget: {epochs} epochs take "
             f"{planned / 60:.1f} of {left / 60:.1f} min, so its schedule follows its own "
             f"pace for the rest (about {longer:.0f} epochs)")
    plan.seconds[TEACHER_KEY] = left


def smallest_paying_budget(plan: Plan) -> float | None:
    """The smallest budget (a round number of minutes) whose plan trains a student, at the
    rates this plan measured; None past 8x this one."""
    minutes = plan.budget_minutes
    while minutes < 8 * plan.budget_minutes:
        minutes = math.ceil(minutes * 1.25)
        given = apply_overrides(plan.given, {"budget": float(minutes)})
        trial = make_plan(given, plan.rates)
        if trial.value("iterations"):
            return float(minutes)
    return None


def fitted_students(plan: Plan, rates: Rates, seconds: float,
                    family: str) -> tuple[int, list[float]]:
    """(iterations, each student's passes) in ``seconds``: two students where each gets
    MIN_PASSES, else one (or the user's iterations)."""
    for count in [plan.value("iterations")] if plan.user_set("iterations") else (2, 1):
        passes = student_passes(plan, rates, seconds, count)
        if count == 1 or all(p >= MIN_PASSES[family] for p in passes):
            break
    return count, passes


def grow_student(plan: Plan, rates: Rates, seconds: float) -> bool:
    """Whether the planned small from-scratch student grows to LARGE_SCRATCH_STUDENT: where
    its first student gets at least LARGE_STUDENT_PASSES in ``seconds`` (set then)."""
    if plan.values.get("student.model") != SCRATCH_STUDENT["model"]:
        return False  # the user's student, or a pretrained one
    larger = {f"student.{key}": value for key, value in LARGE_SCRATCH_STUDENT.items()}
    trial = dataclasses.replace(plan, values={**plan.values, **larger})
    _, passes = fitted_students(trial, rates, seconds, "scratch")
    if passes[0] < LARGE_STUDENT_PASSES:
        return False
    why = (f"the budget gives it {passes[0]:.1f} passes (>= {LARGE_STUDENT_PASSES:g}): the "
           f"larger small-image student learns past where {SCRATCH_STUDENT['model']} stops "
           "(89.82% against 88.9% on Fashion-MNIST)")
    for key, value in larger.items():
        plan.set(key, value, why if key == "student.model" else
                 "the larger student's recipe (configs/fashion-mnist-1000-cpu.yaml)")
    return True


def plan_warmups(plan: Plan, passes) -> None:
    """A from-scratch student's warm-up, lengthened to MIN_WARMUP_STEPS where its passes
    are few (the first student's in ``student``, the later ones' in ``students``)."""
    if "student.warmup_epochs" not in plan.values:
        return  # the user's, or a pretrained student's default
    student = {key: plan.value(f"student.{key}") for key in
               ("warmup_epochs", "epochs", "batch_size", "unlabeled_ratio")}
    warmups = [warmup_epochs(student, p, plan.facts.pile) for p in passes]
    if warmups[0] != student["warmup_epochs"]:
        plan.set("student.warmup_epochs", warmups[0], f"at least {MIN_WARMUP_STEPS} warm-up "
                 "steps: a shorter warm-up to lr 0.8 made a short student collapse")
    if any(w != warmups[0] for w in warmups[1:]):  # a later student's own, where it differs
        plan.set("students", [{**entry, "warmup_epochs": w} if w != warmups[0] else entry
                              for entry, w in zip(plan.value("students"), warmups)],
                 plan.reasons.get("students", "") + f"; at least {MIN_WARMUP_STEPS} warm-up "
                 "steps each")


def warmup_epochs(student: dict, passes: float, pile: int) -> float:
    """The planned warm-up (in epochs), or MIN_WARMUP_STEPS' worth when that is longer: a
    student of ``passes`` over ``pile`` pseudo-labeled images, in ``student``'s epochs and
    batches (at most half its epochs: the cosine decay needs the other half)."""
    steps = passes * max(pile, 1) / (student["batch_size"] * student["unlabeled_ratio"])
    needed = math.ceil(100 * MIN_WARMUP_STEPS * student["epochs"] / max(steps, 1)) / 100
    return min(student["epochs"] / 2, max(student["warmup_epochs"], needed))


# --- the plan's estimates, on the one time model ------------------------------------------

def teacher_seconds(plan: Plan, rates: Rates, size: int, epochs: int,
                    model: str | None = None) -> float:
    """The teacher's training and evaluations (none for a finished ``teacher_run``)."""
    facts, model = plan.facts, model or plan.teacher_model()
    if plan.teacher:
        return 0.0
    train = rates.training(model, size, 3, plan.value("teacher.batch_size"))
    infer = rates.inference(model, size, 3)
    return step_seconds(evaluated_images(facts.test, facts.val, epochs), infer,
                        trained=epochs * facts.labeled, train_rate=train)


def pile_seconds(plan: Plan, rates: Rates, size: int, flip: bool = False,
                 model: str | None = None) -> float:
    """The teacher labeling the pile at ``size`` px (twice over: ``flip``), its decoding
    included."""
    views = 2 if flip else 1
    infer = rates.inference(model or plan.teacher_model(), size, 3)
    return seconds_to_label(plan.facts.pile, views, infer, plan.facts.decode)


def planned_student(plan: Plan) -> StudentShape:
    """The first student as the plan has it so far."""
    return StudentShape.of(lambda name: plan.value(f"student.{name}"))


def student_prices(plan: Plan, rates: Rates) -> StudentPrices:
    """The planned student's prices (``time_model.StudentPrices``), as the re-plan prices
    it from the same rates: a pass over the pile, its fixed part, a labeling by it."""
    facts, student = plan.facts, planned_student(plan)
    return StudentPrices.of(
        pile=facts.pile, labeled=facts.pile, train_rate=student_rate(rates, student, facts.streams),
        infer_rate=inference_rate(rates, student), unlabeled_ratio=student.unlabeled_ratio,
        evaluated=evaluated_images(facts.test, facts.val, student.epochs),
        views=2 if plan.value("pseudo_label.flip") else 1,
        decode=facts.decode, streams=facts.streams)


def labeling_seconds(plan: Plan, rates: Rates, k: int) -> float:
    """Iteration ``k``'s labeling: the teacher's, then each student's."""
    if k == 1:
        return pile_seconds(plan, rates, plan.teacher_size(), plan.value("pseudo_label.flip"))
    return student_prices(plan, rates).labeling


def student_seconds(plan: Plan, rates: Rates, passes: float) -> float:
    prices = student_prices(plan, rates)
    return prices.fixed + passes * prices.per_pass


def student_passes(plan: Plan, rates: Rates, seconds: float, count: int) -> list[float]:
    """Passes of ``count`` students sharing ``seconds`` (``time_model.fit_passes``) with the
    labelings (the first is the teacher's)."""
    if not plan.facts.pile:  # no unlabeled images: the survey says so
        return [LEAST_PASSES] * count
    return fit_passes(seconds - labeling_seconds(plan, rates, 1), 1, count,
                      student_prices(plan, rates))


def report_seconds(plan: Plan, rates: Rates) -> float:
    """The report's corruption test, fitted into REPORT_SHARE (fewer images, or none)."""
    facts = plan.facts
    if not plan.value("corruptions") or not facts.test:
        return 0.0
    teacher = rates.inference(plan.teacher_model(),
                              plan.teacher_size(), 3)
    student = inference_rate(rates, planned_student(plan))
    models = 1 + (plan.value("iterations") if "iterations" in plan.values else 2)
    per_image = CORRUPTED * (1 / teacher + (models - 1) / student)
    images = plan.value("corruption_images") or facts.test
    share = REPORT_SHARE * 60 * plan.budget_minutes
    if images * per_image > share and not plan.user_set("corruption_images"):
        images = int(share / per_image) // 100 * 100
        if images < MIN_CORRUPTION_IMAGES:
            plan.set("corruptions", False, f"the corruption test would not fit "
                     f"{REPORT_SHARE:.0%} of the budget")
            return 0.0
        plan.set("corruption_images", images, f"as many test images as fit {REPORT_SHARE:.0%} "
                 "of the budget")
    return images * per_image


def planned_config(given: dict[str, Any]):
    """(the config a self-train run with the user's ``given`` values runs with, the plan
    that chose its unset values)."""
    plan = make_plan(given)
    config = build(SelfTrainConfig, plan.merged())
    return config, plan
