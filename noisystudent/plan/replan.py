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

from noisystudent import runs, timings
from noisystudent.config import to_dict
from noisystudent.labels.directory import read_summary
from noisystudent.layout import PLAN_KEY, REPORT_KEY, SelfTrainLayout, student_key

from . import time_model
from .notes import annotated_yaml
from .rates import Rates
from .rules import MIN_CORRUPTION_IMAGES, MIN_PASSES, SCRATCH_STUDENT, Plan, warmup_epochs
from .time_model import StudentShape

log = logging.getLogger(__name__)

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
                                      "seconds": plan.seconds})


def replan_student(config, run: Path, k: int) -> dict[str, float]:
    """Student ``k``'s length from the time the budget has left, once its pseudo-labels are
    made (a run whose plan set the students' passes): the changes to its config, else
    nothing."""
    info = timings.planned(run)
    if not _plans_students(info):
        return {}
    passes, seconds, speed, fixed = _fitted_student(config, run, k, info, labeled=True)
    info["seconds"][student_key(k)] = seconds
    runs.write_json(run / PLAN_JSON, info)
    log.info("plan: student %d gets %.2f passes, %.1f min of training at %.0f images/s (and "
             "%.1f of evaluation)", k, passes, (seconds - fixed) / 60, speed, fixed / 60)
    if "student.warmup_epochs" not in info["planned"]:
        return {"passes": passes}
    student = config.student_config(k, "pending")
    kept = read_summary(SelfTrainLayout(run, config.teacher_run).pseudo_labels(k))["kept"]
    warmup = warmup_epochs({"warmup_epochs": SCRATCH_STUDENT["warmup_epochs"],
                            "epochs": student.epochs, "batch_size": student.batch_size,
                            "unlabeled_ratio": student.unlabeled_ratio}, passes, kept)
    return {"passes": passes, "warmup_epochs": warmup}


def worth_another(config, run: Path, k: int) -> bool:
    """Whether iteration ``k`` (> 1) still pays in the time left: its labeling and a student
    of at least MIN_PASSES. False drops it, and the iterations after it."""
    info = timings.planned(run)
    if not _plans_students(info) or k < 2:
        return True
    passes = _fitted_student(config, run, k, info, labeled=False)[0]
    family = "scratch" if config.student_config(k, "pending").pretrained == "none" \
        else "pretrained"
    if passes >= MIN_PASSES[family]:
        return True
    log.warning("plan: iteration %d dropped: the budget leaves its student %.2f passes, under "
                "the %g a student %s needs", k, passes, MIN_PASSES[family],
                "from scratch" if family == "scratch" else "from pretrained weights")
    info["dropped"] = k
    runs.write_json(run / PLAN_JSON, info)
    return False


def _plans_students(info: dict) -> bool:
    return bool(info.get("budget_minutes")) and "student.passes" in info.get("planned", ())


def _fitted_student(config, run: Path, k: int, info: dict, *,
                    labeled: bool) -> tuple[float, float, float, float]:
    """(passes, seconds, images/s, seconds of evaluation) of student ``k`` filling its share
    of the time left. ``labeled``: its pseudo-labels exist; otherwise its labeling, by the
    previous student, is estimated from the last one and counted too. The machine's speed
    comes from the run's finished steps (the previous student's own), else from the plan's
    measurement of the bare step (``time_model.student_rate``)."""
    layout = SelfTrainLayout(run, config.teacher_run)
    student = StudentShape.of(config.student_config(k, "pending"))
    last = k if labeled else k - 1  # the last labeling done
    summary = read_summary(layout.pseudo_labels(last))
    pile, labeled_images = summary["kept"] or 1, summary["unlabeled_images"] or 1
    speed = _observed_speed(layout.student(k - 1), student) if k > 1 else None
    # Without a finished student's speed, the rates are measured again: a cached one can be
    # hours old, and a shared machine drifts (its students ran at 470 and at 630 images/s in
    # two sessions on one CPU). The seconds spent count toward the budget.
    rates = Rates(config.device, config.precision, fresh=speed is None)

    # Decoding: what labeling took beyond the labeling model's measured inference, over every
    # view it labeled (two with flip-averaged labels; 0 left for images already in memory).
    # A student streaming the kept images decodes each per pass.
    labeler = config.teacher_config() if last == 1 else config.student_config(last - 1,
                                                                              "pending")
    views = 2 if config.pseudo_label_config().flip else 1
    took = timings.read(run).get(timings.step_name(run, layout.pseudo_labels(last))) or 0.0
    decode = max(0.0, took / labeled_images - views / time_model.inference_rate(rates, labeler))
    trained = time_model.trained_per_pass(pile, student.unlabeled_ratio)
    if speed is not None:  # the previous student's own speed, its decoding included
        per_pass = trained / speed
    else:  # the bare step's measured speed, times the student step's overhead
        speed = time_model.student_rate(rates, student)
        per_pass = trained / speed + pile * decode
    facts = info.get("facts", {})
    infer = time_model.inference_rate(rates, student)
    evaluated = time_model.evaluated_images(facts.get("test", 0), facts.get("val", 0),
                                            student.epochs)
    fixed = time_model.step_seconds(evaluated, infer)
    if rates.spent:  # measured before the clock is read
        timings.add(run, run / PLAN_KEY, rates.spent)
    labelings = range(k + (1 if labeled else 0), config.iterations + 1)
    later = range(k + 1, config.iterations + 1)
    left = (time_model.usable_seconds(info["budget_minutes"]) - sum(timings.read(run).values())
            - info["seconds"].get(REPORT_KEY, 0.0)
            - len(labelings) * labeled_images * (decode + views / infer)
            - fixed * (1 + len(later)))
    weights = time_model.shares(k, config.iterations)
    passes = round(time_model.passes_in(left, weights, per_pass)[0], 2)
    return passes, fixed + passes * per_pass, trained / per_pass, fixed


def replan_report(config, run: Path):
    """The config the report runs with: under a budget whose plan chose the corruption test's
    size, fewer corrupted images (or none) when the students left less time than planned."""
    info = timings.planned(run)
    planned = info.get("seconds", {}).get(REPORT_KEY)
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
