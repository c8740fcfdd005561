"""The students: from scratch or pretrained, the pile sized to what they can learn, their
lengths in the budget, the larger student where it pays, their warm-ups."""

from __future__ import annotations

import dataclasses
import math

from noisystudent.core.layout import (
    CORRUPTIONS_KEY,
    PLAN_KEY,
    REPORT_KEY,
    TEACHER_KEY,
    labels_key,
    student_key,
)

from .prices import (
    corruptions_seconds,
    fitted_students,
    grow_student,
    labeling_seconds,
    report_seconds,
    scratch,
    student_seconds,
    teacher_seconds,
    timing_seconds,
)
from .rates import Rates
from .recipes import (
    LARGE_PILE,
    LATER_TARGET_TEMPERATURE,
    MIN_PASSES,
    MIN_WARMUP_STEPS,
    PHOTO_SIZE,
    PILE_PASSES,
    SCRATCH_PASSES,
    SCRATCH_STUDENT,
    SHORTEST_TEACHER,
    SMALL_IMAGE,
    SMALLEST_PILE,
)
from .teacher import teacher_alone
from .values import Plan


def choose_student(plan: Plan) -> None:
    facts = plan.facts
    if plan.user_set("student.model") or plan.value("student_models"):
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
    if not plan.user_set("iterations") and (passes[0] < MIN_PASSES[family]
                                              or short_teacher(plan)):
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
        plan.seconds[student_key(k)] = student_seconds(plan, rates, passes[k - 1], k)
    plan.seconds[CORRUPTIONS_KEY] = corruptions_seconds(plan, rates)
    plan.seconds[REPORT_KEY] = report - plan.seconds[CORRUPTIONS_KEY]
    plan.seconds[PLAN_KEY] = timing_seconds(rates)
    plan.short = [student_key(k) for k in range(1, count + 1)
                  if passes[k - 1] < MIN_PASSES[family]]  # the user's iterations only


def short_teacher(plan: Plan) -> bool:
    """Whether the plan cut the teacher under SHORTEST_TEACHER of its epochs to make room for
    the students: a student of a teacher that short ends below the teacher the whole budget
    trains alone."""
    if plan.teacher or plan.user_set("teacher.epochs"):
        return False
    return plan.value("teacher.epochs") < SHORTEST_TEACHER * plan.typed.teacher.epochs


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
