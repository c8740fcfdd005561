"""A run with a budget, during the run: the plan kept beside it (plan.yaml with the reasons,
plan.json with what it plans again from), each student planned again from the time left
before it starts (``replan_student``) at the speed the run's finished steps measured, an
iteration the time left cannot pay for dropped (``worth_another``), and the corruption test
shrunk when the students left less time than planned (``replan_report``). The estimates are
the plan's own (``time_model.py``)."""

from __future__ import annotations

import dataclasses
import logging
import statistics
from pathlib import Path

from noisystudent.core import runs, timings
from noisystudent.core.layout import (
    PLAN_KEY,
    REPORT_KEY,
    STUDENT_DIR,
    SelfTrainLayout,
    student_key,
)
from noisystudent.core.settings_io import to_dict
from noisystudent.deploy.labeling import EXPORT_SECONDS
from noisystudent.labels.directory import read_summary

from . import time_model
from .notes import annotated_yaml
from .rates import Rates
from .recipes import ENOUGH_PASSES, MIN_CORRUPTION_IMAGES, MIN_PASSES, SCRATCH_STUDENT
from .students import warmup_epochs
from .time_model import StudentShape
from .values import Plan

log = logging.getLogger(__name__)

# A student whose labels are made is dropped only under this share of its minimum passes.
DROP_UNDER = 0.5
# The most the report's price is scaled by the run's pace (``_report_seconds``).
MAX_PACE = 3.0
# A labeling timed in fewer seconds than this teaches the plan nothing about its speed.
MIN_TIMED_SECONDS = 5.0

PLAN_YAML, PLAN_JSON = runs.PLAN_FILES


def save(run: Path, plan: Plan, config) -> None:
    """plan.yaml (the config with the plan's reasons) and plan.json (what the run plans
    again from: the budget, the keys the plan set, the seconds planned per step)."""
    runs.write_text(run / PLAN_YAML, annotated_yaml(to_dict(config), plan))
    if plan.rates is not None and plan.rates.spent:  # the budget's clock ran while it measured
        timings.add(run, run / PLAN_KEY, plan.rates.spent)
    runs.write_json(run / PLAN_JSON, {"budget_minutes": plan.budget_minutes,
                                      "planned": sorted(plan.values),
                                      "facts": dataclasses.asdict(plan.facts),
                                      "seconds": plan.seconds, "short": plan.short})


def replan_student(config, run: Path, k: int) -> dict[str, float] | None:
    """Student ``k``'s length from the time the budget has left, once its pseudo-labels are
    made (a run whose plan set the students' passes): the changes to its config; None where
    the time left would give it under half the passes it needs (the iteration is dropped).
    Between half and all of them it trains the minutes left: its labels are made, its pace
    measures what the minutes buy, and one that trains fewer passes than it needs must lead
    its teacher to be kept (keep.py), where dropping it would leave the minutes unused."""
    info = timings.planned(run)
    if not _plans_students(info):
        return {}
    passes, seconds, speed, fixed = _fitted_student(config, run, k, info, labeled=True)
    least = _min_passes(config, k)
    if passes < DROP_UNDER * least:
        _drop(run, info, k, passes, least)
        return None
    if passes < least:
        log.warning("plan: student %d gets %.2f passes at the speed measured so far, under the "
                    "%g it needs: it trains the minutes left, its own pace decides its passes, "
                    "and one short of %g must lead its teacher to be kept", k, passes, least,
                    least)
    info["seconds"][student_key(k)] = seconds
    # What its pace must reach for the student to be trusted as planned (keep.py), and past
    # what a from-scratch student gains nothing more, however many more the plan gave it.
    info.setdefault("least_passes", {})[student_key(k)] = _min_passes(config, k)
    if _scratch(config, k):
        info.setdefault("enough_passes", {})[student_key(k)] = ENOUGH_PASSES
    runs.write_json(run / PLAN_JSON, info)
    log.info("plan: student %d gets %.2f passes, %.1f min of training at %.0f images/s (and "
             "%.1f of evaluation)", k, passes, (seconds - fixed) / 60, speed, fixed / 60)
    # The passes set the steps per epoch; the minutes, the step's in all, fit its steps to its
    # own pace and its evaluations to their measured rate (training/pace.py).
    fitted = {"passes": passes, "minutes": round(seconds / 60, 3)}
    if "student.warmup_epochs" not in info["planned"]:
        return fitted
    student = config.student_config(k, "pending")
    labels = SelfTrainLayout(run, config.teacher_run).pseudo_labels(k)
    selected = read_summary(labels)["selected"]
    warmup = warmup_epochs({"warmup_epochs": SCRATCH_STUDENT["warmup_epochs"],
                            "epochs": student.epochs, "batch_size": student.batch_size,
                            "unlabeled_ratio": student.unlabeled_ratio}, passes, selected)
    return fitted | {"warmup_epochs": warmup}


def worth_another(config, run: Path, k: int) -> bool:
    """Whether iteration ``k`` still pays in the time left: its labeling and a student of at
    least MIN_PASSES. False drops a planned one, and the iterations after it; past the planned
    iterations (students that ended early left the minutes), whether one more pays."""
    info = timings.planned(run)
    if not _plans_students(info):
        return k <= config.iterations
    passes = _fitted_student(config, run, k, info, labeled=False)[0]
    if passes >= _min_passes(config, k):
        if k > config.iterations:
            log.info("plan: the students ended early; iteration %d pays in the time left "
                     "(%.2f passes)", k, passes)
        return True
    if k <= config.iterations:
        _drop(run, info, k, passes, _min_passes(config, k))
    return False


def _scratch(config, k: int) -> bool:
    return config.student_config(k, "pending").pretrained == "none"


def _min_passes(config, k: int) -> float:
    return MIN_PASSES["scratch" if _scratch(config, k) else "pretrained"]


def _drop(run: Path, info: dict, k: int, passes: float, least: float) -> None:
    log.warning("plan: iteration %d dropped: the budget leaves its student %.2f passes, under "
                "the %g it needs to pay", k, passes, least)
    info["dropped"] = k
    runs.write_json(run / PLAN_JSON, info)


def _plans_students(info: dict) -> bool:
    return bool(info.get("budget_minutes")) and "student.passes" in info.get("planned", ())


def _fitted_student(config, run: Path, k: int, info: dict, *,
                    labeled: bool) -> tuple[float, float, float, float]:
    """(passes, seconds, images/s, seconds of evaluation) of student ``k`` filling its share
    of the time left (``time_model.fit_passes``, as the first plan). ``labeled``: its
    pseudo-labels exist; otherwise its labeling is priced too. The machine's speed comes from
    the run's finished steps (the previous student's own), else from the plan's measurement
    of the bare step (``time_model.student_rate``)."""
    layout = SelfTrainLayout(run, config.teacher_run)
    students = [StudentShape.of(config.student_config(j, "pending"))
                for j in range(k, max(k, config.iterations) + 1)]  # each priced as itself
    student = students[0]
    facts = info.get("facts", {})
    last = k if labeled else k - 1  # the last labeling done
    if last:
        summary = read_summary(layout.pseudo_labels(last))
        pile, labeled_images = summary["selected"] or 1, summary["unlabeled_images"] or 1
    else:  # nothing labeled yet: the plan's pile
        pile = labeled_images = max(1, facts.get("pile", 1))
    speed = _observed_speed(layout.student(k - 1), student) if k > 1 else None
    # Without a finished student's speed, the plan's (cached) rates: the student's pace fits
    # its length to its own steps (training/pace.py), so measuring again before it starts
    # bought nothing but a noisy number (one core of a Xeon: 1,034 and 1,791 images/s for one
    # model in two runs) that dropped students whose labels were made.
    rates = Rates(config.device, config.precision)
    views = _views(config)
    decode = _decode_seconds(config, run, last, rates, views=views, facts=facts)

    def prices_of(shape: StudentShape) -> time_model.StudentPrices:
        streams = bool(facts.get("streams"))
        prices = time_model.StudentPrices.of(
            pile=pile, labeled=labeled_images,
            train_rate=time_model.student_rate(rates, shape, streams),
            infer_rate=time_model.inference_rate(rates, shape),
            unlabeled_ratio=shape.unlabeled_ratio,
            evaluated=time_model.evaluated_images(facts.get("test", 0), facts.get("val", 0),
                                                  shape.epochs),
            views=views, decode=decode, streams=streams,
            onnx_speedup=_onnx_speedup(config, rates, labeled_images * views, shape))
        if speed is not None and (shape.model, shape.image_size) == (
                student.model, student.image_size):  # the previous student's own speed,
            prices = dataclasses.replace(  # its decoding included
                prices, per_pass=time_model.trained_per_pass(pile, shape.unlabeled_ratio) / speed)
        return prices

    every = [prices_of(shape) for shape in students]
    prices = every[0]
    if rates.spent:  # measured before the clock is read
        timings.add(run, run / PLAN_KEY, rates.spent)
    left = (timings.Budget(info["budget_minutes"]).usable - sum(timings.read(run).values())
            - _report_seconds(info, run)
            - (0.0 if labeled else _first_labeling(config, rates, images=labeled_images,
                                                  views=views, decode=decode, k=k)))
    passes = round(time_model.fit_passes(left, k, every)[0], 2)
    trained = time_model.trained_per_pass(pile, student.unlabeled_ratio)
    return passes, prices.fixed + passes * prices.per_pass, trained / prices.per_pass, \
        prices.fixed


def _first_labeling(config, rates: Rates, *, images: int, views: int, decode: float,
                    k: int) -> float:
    """Iteration ``k``'s labeling, not yet made: by the teacher for the first, else by
    student k - 1."""
    labeler = _labeler(config, k)
    return time_model.labeling_seconds(images, views, time_model.inference_rate(rates, labeler),
                                       decode, _onnx_speedup(config, rates, images * views,
                                                             labeler))


def _labeler(config, k: int):
    """The config of the model that makes iteration ``k``'s labels: the teacher for the
    first, else student k - 1."""
    return config.teacher_config() if k == 1 else config.student_config(k - 1, "pending")


def _views(config) -> int:
    """The views a labeling infers per image: the mirror too, where the labels average it."""
    return 2 if config.pseudo_label_config().flip else 1


def _onnx_speedup(config, rates: Rates, images: int, labeler) -> float:
    """ONNX Runtime's speed over PyTorch's where it labels ``images`` views by ``labeler`` (a
    StudentShape, or a stage's config), else 0."""
    return rates.onnx_speedup(config.pseudo_label.runtime, images, time_model.labeler(labeler))


def _decode_seconds(config, run: Path, last: int, rates: Rates, *, views: int,
                    facts: dict) -> float:
    """Seconds to decode one image: what the last labeling took beyond its model's measured
    inference, over every view it labeled (0 for images already in memory); before any
    labeling, the survey's."""
    if not last:
        return facts.get("decode", 0.0) if facts.get("streams") else 0.0
    layout = SelfTrainLayout(run, config.teacher_run)
    labeler = _labeler(config, last)
    summary = read_summary(layout.pseudo_labels(last))
    images = summary["unlabeled_images"] or 1
    took = timings.read(run).get(timings.step_name(run, layout.pseudo_labels(last))) or 0.0
    took -= time_model.STEP_OVERHEAD
    rate = time_model.inference_rate(rates, labeler)
    if summary.get("runtime") == "onnxruntime":  # its export, then its own speed
        took -= EXPORT_SECONDS
        rate *= _onnx_speedup(config, rates, images * views, labeler) or 1.0
    return max(0.0, took / images - views / rate)


def replan_report(config, run: Path):
    """The config the report runs with: under a budget whose plan chose the corruption test's
    size, fewer corrupted images (or none) when the students left less time than planned."""
    info = timings.planned(run)
    planned = _report_seconds(info, run)
    if not info.get("budget_minutes") or not planned or not config.corruptions or \
            "corruption_images" not in info.get("planned", ()):
        return config
    left = 60 * info["budget_minutes"] - sum(timings.read(run).values())
    if left >= planned:
        return config
    images = int(config.corruption_images * max(0.0, left) / planned) // 100 * 100
    log.info("plan: %d corrupted test images instead of %d, to end within the budget",
             images, config.corruption_images)
    if images < MIN_CORRUPTION_IMAGES:
        return config.model_copy(update={"corruptions": False})
    return config.model_copy(update={"corruption_images": images})


def _report_seconds(info: dict, run: Path) -> float:
    """The report's planned seconds at the pace the run's steps of fixed work (the teacher,
    the labelings, the corrupted images) ran against their plan, where that was slower: the
    report is fixed work too, and on a slow hour it took 3.0 of its 1.8 planned minutes and
    the run 101% of its budget (Xeon, 2026-12-07). A faster pace keeps the plan's seconds:
    the steps' estimates are off both ways by more than the report's share."""
    planned, spent = info.get("seconds", {}), timings.read(run)
    fixed = [key for key in planned if key in spent and not key.endswith("/" + STUDENT_DIR)
             and key not in (PLAN_KEY, REPORT_KEY)]  # a student's minutes are fitted, not priced
    priced = sum(planned[key] for key in fixed)
    pace = sum(spent[key] for key in fixed) / priced if priced > 0 else 1.0
    return planned.get(REPORT_KEY, 0.0) * min(MAX_PACE, max(1.0, pace))


def remember_speed(config, run: Path, k: int) -> None:
    """Student ``k``'s speed over its minutes, taken back to the bare step's
    (``time_model.STUDENT_STEP``), as this machine's training rate for its model
    (``Rates.observed``): the next plan here prices its students at what they ran at."""
    student = StudentShape.of(config.student_config(k, "pending"))
    speed = _observed_speed(SelfTrainLayout(run, config.teacher_run).student(k), student)
    if speed is None:
        return
    streams = bool(timings.planned(run).get("facts", {}).get("streams"))
    bare = speed / time_model.STUDENT_STEP["streamed" if streams else "in memory"]
    if Rates(config.device, config.precision).observed(
            student.model, student.image_size, student.in_chans, student.model_options, bare):
        log.info("plan: %s @%d px trained at %.0f images/s here (a bare step of %.0f), "
                 "cached for the next plan", student.model, student.image_size, speed, bare)


def remember_labeling(config, run: Path, k: int) -> None:
    """Where ONNX Runtime made iteration ``k``'s labels, its speed over its labeler's
    PyTorch inference rate as this machine's speedup for that model (``Rates.observed_onnx``):
    the next plan here prices its labelings at it."""
    summary = read_summary(SelfTrainLayout(run, config.teacher_run).pseudo_labels(k))
    images = summary.get("unlabeled_images") or 0
    facts = timings.planned(run).get("facts", {})
    decode = facts.get("decode", 0.0) if facts.get("streams") else 0.0
    seconds = (summary.get("labeling_seconds") or 0.0) - EXPORT_SECONDS - images * decode
    if summary.get("runtime") != "onnxruntime" or not images or seconds < MIN_TIMED_SECONDS:
        return
    labeler = _labeler(config, k)
    views = _views(config)
    speedup = Rates(config.device, config.precision).observed_onnx(
        time_model.labeler(labeler), images * views / seconds)
    if speedup:
        log.info("plan: ONNX Runtime labeled %.1fx as fast as PyTorch's measured rate here, "
                 "cached for the next plan", speedup)


def _observed_speed(step: Path, student: StudentShape) -> float | None:
    """Training images/s a finished step measured (its metrics.jsonl), when it trained the
    same model at the same size as ``student``."""
    log_path, info_path = step / runs.METRICS_LOG, step / runs.MODEL_INFO
    if not (log_path.is_file() and info_path.is_file()):
        return None
    info = runs.read_json(info_path)
    if info.get("model") != student.model or info.get("input", {}).get("size") != \
            student.image_size:
        return None
    speeds = [row["images_per_s"] for row in runs.read_jsonl(log_path) if "images_per_s" in row]
    return statistics.median(speeds) if speeds else None
