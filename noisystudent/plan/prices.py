"""What each step of a planned run costs, in seconds, from the plan's facts and this machine's
rates (the teacher, a labeling, a student, the report, the timing: time_model.py's functions
applied to the plan), and what the time left buys the students: how many, how long, and
whether the larger one."""

from __future__ import annotations

import dataclasses

from .rates import Rates
from .recipes import (
    CORRUPTED,
    LARGE_PILE,
    LARGE_SCRATCH_STUDENT,
    LARGE_STUDENT_PASSES,
    MIN_CORRUPTION_IMAGES,
    MIN_PASSES,
    PHOTO_SIZE,
    REPORT_SHARE,
    SCRATCH_STUDENT,
)
from .time_model import (
    LEAST_PASSES,
    StudentPrices,
    StudentShape,
    evaluated_images,
    fit_passes,
    inference_rate,
    labeler,
    step_seconds,
    student_rate,
)
from .time_model import labeling_seconds as seconds_to_label
from .values import Plan

# One core of a Xeon made 200 Fashion-MNIST test images' 15,000 corrupted versions (32 px)
# in 22.5 s: 1.5 ms each (2026-12-07); larger images cost their area.
CORRUPTING_SECONDS, CORRUPTED_SIDE = 1.5e-3, 32


def timing_seconds(rates: Rates | None) -> float:
    """The budget's seconds spent timing this machine: what the plan measured."""
    return rates.spent if rates is not None else 0.0


def scratch(plan: Plan) -> bool:
    """Whether the students learn from scratch in a small-image family (the user's model,
    else the rule)."""
    if plan.value("student_models"):  # an empty list (as a replay.yaml writes it) sets none
        return plan.value("student_models")[0].startswith("cifar_")
    if plan.user_set("student.model"):
        return plan.value("student.model").startswith("cifar_")
    return plan.facts.stored_size < PHOTO_SIZE and plan.facts.pile >= LARGE_PILE


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
    teacher = (model or plan.teacher_model(), size, 3, None)
    return seconds_to_label(plan.facts.pile, views, rates.inference(*teacher), plan.facts.decode,
                            onnx_speedup(plan, rates, plan.facts.pile * views, teacher))


def onnx_speedup(plan: Plan, rates: Rates, images: int, labeler: tuple) -> float:
    """Where ONNX Runtime labels ``images`` views with ``labeler`` (model, size, channels,
    options), its speed over PyTorch's (else 0)."""
    return rates.onnx_speedup(plan.value("pseudo_label.runtime"), images, labeler)


def planned_student(plan: Plan, k: int = 1) -> StudentShape:
    """Student ``k`` as the plan has it so far, as the config builds it: the student
    section, its model from ``student_models``, then its ``students`` entry (in each list
    the last one repeats)."""
    entry = {}
    models = plan.value("student_models") or []
    if models:
        entry["model"] = models[min(k, len(models)) - 1]
    entries = plan.value("students") or []
    if entries:
        given = entries[min(k, len(entries)) - 1]
        entry |= given if isinstance(given, dict) else given.model_dump()  # typed: the keys set
    return StudentShape.of(lambda name: entry.get(name, plan.value(f"student.{name}")))


def student_prices(plan: Plan, rates: Rates, k: int = 1) -> StudentPrices:
    """Student ``k``'s prices (``time_model.StudentPrices``), as the re-plan prices it from
    the same rates: a pass over the pile, its fixed part, a labeling by it."""
    facts, student = plan.facts, planned_student(plan, k)
    views = 2 if plan.value("pseudo_label.flip") else 1
    return StudentPrices.of(
        pile=facts.pile, labeled=facts.pile, train_rate=student_rate(rates, student, facts.streams),
        infer_rate=inference_rate(rates, student), unlabeled_ratio=student.unlabeled_ratio,
        evaluated=evaluated_images(facts.test, facts.val, student.epochs), views=views,
        decode=facts.decode, streams=facts.streams,
        onnx_speedup=onnx_speedup(plan, rates, facts.pile * views, labeler(student)))


def labeling_seconds(plan: Plan, rates: Rates, k: int) -> float:
    """Iteration ``k``'s labeling: the teacher's, then each student's."""
    if k == 1:
        return pile_seconds(plan, rates, plan.teacher_size(), plan.value("pseudo_label.flip"))
    return student_prices(plan, rates, k - 1).labeling


def student_seconds(plan: Plan, rates: Rates, passes: float, k: int = 1) -> float:
    prices = student_prices(plan, rates, k)
    return prices.fixed + passes * prices.per_pass


def student_passes(plan: Plan, rates: Rates, seconds: float, count: int) -> list[float]:
    """Passes of ``count`` students sharing ``seconds`` (``time_model.fit_passes``), each at
    its own speed, with the labelings (the first is the teacher's)."""
    if not plan.facts.pile:  # no unlabeled images: the survey says so
        return [LEAST_PASSES] * count
    return fit_passes(seconds - labeling_seconds(plan, rates, 1), 1,
                      [student_prices(plan, rates, k) for k in range(1, count + 1)])


def making_seconds(plan: Plan, rates: Rates) -> float:
    """Seconds to make one test image's corrupted versions (CORRUPTED of them), on the cores
    the rates are for; the report keeps them on disk, so a later run finds them made."""
    side = max(CORRUPTED_SIDE, plan.facts.stored_size)
    return CORRUPTED * CORRUPTING_SECONDS * (side / CORRUPTED_SIDE) ** 2 / rates.cores()


def corruptions_seconds(plan: Plan, rates: Rates) -> float:
    """The part of ``report_seconds`` that makes the corrupted test images (before the
    teacher trains: ``stages/selftrain.py``)."""
    if not plan.value("corruptions") or not plan.facts.test:
        return 0.0
    report_seconds(plan, rates)  # sets the test's size where the budget decides it
    return (plan.value("corruption_images") or plan.facts.test) * making_seconds(plan, rates)


def report_seconds(plan: Plan, rates: Rates) -> float:
    """The report's corruption test, fitted into REPORT_SHARE (fewer images, or none)."""
    facts = plan.facts
    if not plan.value("corruptions") or not facts.test:
        return 0.0
    teacher = rates.inference(plan.teacher_model(),
                              plan.teacher_size(), 3)
    students = plan.value("iterations") if "iterations" in plan.values else 2
    per_image = CORRUPTED * (1 / teacher + sum(
        1 / inference_rate(rates, planned_student(plan, k)) for k in range(1, students + 1))) \
        + making_seconds(plan, rates)
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
