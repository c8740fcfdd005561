"""The data checked before any model is timed, and the validation images the guard holds out."""

from __future__ import annotations

import dataclasses
import math

from noisystudent.core.config import SelfTrainConfig
from noisystudent.core.errors import UserError
from noisystudent.data.fashion_mnist import FASHION_MNIST
from noisystudent.data.splits import held_out

from .prices import report_seconds, teacher_seconds
from .rates import Rates
from .recipes import DEFAULT_HELD_OUT, GUARD_PER_CLASS, MAX_HELD_OUT
from .survey import DataFacts
from .teacher import teacher_ladder
from .values import Plan

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
