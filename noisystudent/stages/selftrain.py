"""``noisystudent self-train``: the Noisy Student loop, read top to bottom like the seed.

    1. train a teacher on the labeled images;
    2. the teacher, without noise, pseudo-labels the unlabeled images;
    3. a student (equal or larger) learns labeled + pseudo-labeled images under noise;
    4. the student becomes the teacher;
    5. repeat from 2.

Each step runs in its own subdirectory and is skipped once finished; an interrupted step
resumes from its checkpoint, so ``--resume`` never recomputes finished work, whenever the run
was killed (even ``kill -9`` mid-write: every file is written atomically and checksummed).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import yaml

from noisystudent import plan
from noisystudent.core import distributed, runs, timings
from noisystudent.core.config import SelfTrainConfig
from noisystudent.core.errors import CorruptFile, UserError
from noisystudent.core.keep import kept_step, untrusted_steps
from noisystudent.core.layout import (
    CORRUPTIONS_KEY,
    REPORT_JSON,
    REPORT_KEY,
    SelfTrainLayout,
    role,
)
from noisystudent.core.settings_io import to_dict
from noisystudent.core.timings import timed
from noisystudent.data.sources import load_run_data
from noisystudent.data.unlabeled import self_train_unlabeled, stored_size
from noisystudent.deploy.export import export_onnx
from noisystudent.labels.directory import pseudo_labels_complete, read_summary
from noisystudent.labels.to_label import copy_to_run
from noisystudent.reports.mlflow_tracking import MlflowRun, log_step, open_mlflow
from noisystudent.reports.report import (
    REPORT_MD,
    add_time_section,
    prepare_corruptions,
    write_report,
)
from noisystudent.reports.review import REPORT_HTML, review_self_train
from noisystudent.reports.tensorboard import Scalars

from .pseudo_label import pseudo_label
from .stage import open_run, share_split
from .student import train_student
from .train import train

log = logging.getLogger(__name__)

@runs.holds_lock
def self_train(config: SelfTrainConfig | None, out: str | Path, *, resume: bool = False,
               quiet: bool = False, planned: plan.Plan | None = None) -> dict:
    """The loop; ``planned`` is the plan that chose ``config``'s unset values (the command
    line's), kept beside it in the run (plan.yaml, plan.json)."""
    run, config = open_run(config, out, resume, SelfTrainConfig)
    if planned is not None and not resume and distributed.is_main():
        plan.save(run, planned, config)
    tracked = open_mlflow(run, config.mlflow, config.mlflow_uri, to_dict(config))
    distributed.barrier()  # rank 0 has written config.yaml (and mlflow.json)
    timings.start_budget(run, timings.Budget(config.budget) if config.budget else None)
    data = load_run_data(config, stored_size(config))  # once, for every stage

    # The report's corrupted test images first: their minutes are spent before any step's
    # length is fitted to what the budget has left.
    with timed(run, run / CORRUPTIONS_KEY):
        prepare_corruptions(config, data.test, quiet)

    # 1. Train a teacher on the labeled images (or start from a finished run).
    layout = SelfTrainLayout(run, config.teacher_run)
    log.info("1. teacher: %s", layout.teacher)
    teacher = layout.teacher if config.teacher_run else run_step(
        layout.teacher, train, config.teacher_config(), quiet, data=data, run=run)
    unlabeled, source = self_train_unlabeled(config, data, teacher)
    kept = 0  # the step kept so far (keep.py): the model that teaches the next iteration
    for k in range(1, MOST_ITERATIONS + 1):
        if not worth_another(config, run, layout, k):  # the planned ones, or one more
            if k <= config.iterations:
                config = with_iterations(config, run, k - 1)
            break
        if k > config.iterations:  # the students left minutes that pay for another
            config = with_iterations(config, run, k)
        # 2. The clean teacher pseudo-labels the unlabeled images.
        labels = layout.pseudo_labels(k)
        if not pseudo_labels_complete(labels):
            distributed.barrier()  # every rank has looked before rank 0 removes it
            if distributed.is_main():
                shutil.rmtree(labels, ignore_errors=True)  # unfinished or torn: redone
            distributed.barrier()
            log.info("2. iteration %d: %s labels the images of %s", k,
                     role(kept), source)
            with timed(run, labels):
                earlier = layout.pseudo_labels(kept + 1)  # what the kept step labeled before
                if kept + 1 < k and pseudo_labels_complete(earlier):
                    copy_labels(earlier, labels)  # the same model's labels: not made twice
                else:
                    pseudo_label(teacher, labels, config.pseudo_label_config(),
                                 images=(unlabeled, source), unlabeled=config.unlabeled,
                                 quiet=quiet)
        log_step(labels, to_dict(config.pseudo_label_config()),
                 read_summary(labels), config=config)
        if distributed.is_main():  # its speed: what the next plan here prices labelings at
            plan.remember_labeling(config, run, k)
        # 3. A noised student learns the labeled and pseudo-labeled images.
        student = layout.student(k)
        log.info("3. iteration %d: noised student in %s", k, student)
        planned = student_config(config, layout, k, kept)
        if planned is None:  # the time left would make it too short to pay
            config = with_iterations(config, run, k - 1)
            break
        share_split(teacher, student)
        run_step(student, train_student, planned, quiet, data=data, unlabeled=unlabeled,
                 run=run)
        if distributed.is_main():  # its speed over minutes: what the next plan here prices
            plan.remember_speed(config, run, k)
        # 4. The student becomes the teacher, if validation shows it no worse; 5. repeat.
        kept = kept_after(config, layout, k)
        teacher = layout.steps(k, False)[kept].run
    if distributed.is_main() and config.iterations:  # the images to label next, at the top
        copy_to_run(layout.pseudo_labels(config.iterations), run)
    finetune = config.finetune_config(str(teacher / runs.MODEL), kept) if kept else None
    if finetune is not None:  # the kept student, fine-tuned on the labeled images
        share_split(teacher, layout.finetune)
        run_step(layout.finetune, train, finetune, quiet, data=data, run=run)
    elif config.fine_tunes:
        log.info("no fine-tune: the teacher is kept, and it learned the labeled images already")
    return write_reports(config, layout, tracked, test_set=data.test, unlabeled=unlabeled,
                         quiet=quiet)


def write_reports(config: SelfTrainConfig, layout: SelfTrainLayout, tracked, *, test_set,
                  unlabeled, quiet: bool) -> dict:
    """The finished run's report.md, report.html, replay.yaml and time section, once, on rank
    0 (the others wait and read it); its tracked scalars."""
    run = layout.run
    if not distributed.is_main():  # the report's evaluations run once, on rank 0
        distributed.barrier()
        return runs.read_json(run / REPORT_JSON)
    with timed(run, run / REPORT_KEY):
        reported = plan.replan_report(config, run)
        write_replay(run, reported, layout)
        write_report(run, reported, test_set, quiet)
        try:  # the page is a view of the finished run: never fail the run for it
            review_self_train(run, unlabeled=unlabeled, test_set=test_set,
                              device=config.device)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"could not write {run}/report.html ({type(err).__name__}: {err}); "
                          f"try: noisystudent review {run}", stacklevel=1)
    report = add_time_section(run)
    log_iterations(Scalars(run, config.tensorboard, tracked), report)
    distributed.barrier()
    return report


REPLAY = "replay.yaml"


def write_replay(run: Path, config: SelfTrainConfig, layout: SelfTrainLayout) -> None:
    """replay.yaml: every value the run ran with, each student's length included (the steps
    its pace fitted, not its minutes) and no budget, so that ``self-train RUN/replay.yaml
    --out NEW`` runs it again exactly (same seed, nothing timed or planned)."""
    values = to_dict(config)
    values["budget"] = None
    if values["teacher"].get("minutes") and not config.teacher_run:  # its fitted length
        values["teacher"].update(_fitted_length(layout.teacher))
    students = []
    for k in range(1, config.iterations + 1):
        ran = runs.read_yaml(layout.student(k) / runs.CONFIG)
        entry = dict(values["students"][min(k, len(values["students"])) - 1]) \
            if values["students"] else {}
        entry.update({key: ran[key] for key in ("passes", "warmup_epochs") if key in ran})
        if ran.get("minutes"):  # the length its pace fitted to the minutes, as steps
            entry.update(_fitted_length(layout.student(k)))
        students.append(entry)
    values["students"] = students
    runs.write_text(run / REPLAY, "# the run's values, each student's length included: "
                    f"noisystudent self-train {run}/{REPLAY} --out NEW_RUN\n"
                    + yaml.safe_dump(values, sort_keys=False))


def _fitted_length(step: Path) -> dict:
    """A step trained for minutes, replayed as what its pace fitted: its steps and the
    pieces of its decay."""
    metrics = runs.read_json(step / runs.METRICS)
    return {"minutes": 0.0, "steps": metrics["steps"],
            "decay_segments": metrics.get("decay_segments", [])}


def kept_after(config: SelfTrainConfig, layout: SelfTrainLayout, k: int) -> int:
    """The step kept once student ``k`` has finished (0: the teacher): the report's rule
    (keep.py), on the validation images each step was measured on."""
    rows = [runs.read_json(step.run / runs.METRICS) | {"role": step.role}
            for step in layout.steps(k, False)]
    kept, comparisons, _ = kept_step(rows, untrusted_steps(layout.run, k))
    if comparisons:
        log.info("keep: %s", comparisons[-1].sentence())
    return kept


def copy_labels(source: Path, target: Path) -> None:
    """An earlier iteration's labels, copied whole: the model that made them labels again."""
    if distributed.is_main():
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        staging.rename(target)
    distributed.barrier()


# The most iterations a run grows to where its students end early and leave the minutes.
MOST_ITERATIONS = 20


def worth_another(config: SelfTrainConfig, run: Path, layout: SelfTrainLayout, k: int) -> bool:
    """Whether iteration ``k`` runs: a planned one while it still fits the budget, one more
    where the budget's minutes left pay for it (a started one always runs)."""
    if k <= config.iterations and (layout.pseudo_labels(k)).exists():
        return True
    if not config.budget:
        return k <= config.iterations
    return distributed.decided_on_main(lambda: plan.worth_another(config, run, k))


def with_iterations(config: SelfTrainConfig, run: Path, iterations: int) -> SelfTrainConfig:
    """The run's config with ``iterations`` students (fewer than planned, or one more),
    saved: its report and a --resume see the iterations it ran."""
    config = config.model_copy(update={"iterations": iterations})
    if distributed.is_main():
        runs.write_yaml(run / runs.CONFIG, to_dict(config))
    return config


def student_config(config: SelfTrainConfig, layout: SelfTrainLayout, k: int, kept: int):
    """Iteration ``k``'s student; under a budget, planned again from the time left before
    it starts (a started one resumes with its saved config); None where that time would not
    pay for it. Where the step kept is not the last (``kept``), the student learns the labels
    an earlier one learned: it draws its own initialisation and noise (the seed moved by the
    tries before it), a second try rather than a repeat."""
    student = config.student_config(k, str(layout.pseudo_labels(k)))
    if k - 1 > kept:
        student = student.model_copy(update={"seed": config.seed + k - 1 - kept})
        log.info("iteration %d: the %s stays kept; its student %d is another try at its "
                 "labels, with seed %d", k, role(kept), k, student.seed)
    if not config.budget or (layout.student(k) / runs.CONFIG).is_file():
        return student
    changes = distributed.decided_on_main(lambda: plan.replan_student(config, layout.run, k))
    return None if changes is None else student.model_copy(update=changes)


def log_iterations(scalars: Scalars, report: dict) -> None:
    """One point per iteration (pseudo-labels, validation and test top-1, mCE) for
    TensorBoard and MLflow; MLflow also gets the kept step's test top-1 and the run's files:
    its reports, its settings and the kept model as ONNX."""
    for row in report["rows"]:
        group = "finetune" if row["finetuned"] else "iteration"
        scalars.add(group, {key: row.get(key) for key in
                            ("pseudo_label_accuracy", "pseudo_labeled", "val_top1",
                             "test_top1", "mce")},
                    row["iteration"])
    if scalars.mlflow is not None:
        scalars.add("kept", {"test_top1": report.get("final_test_top1"),
                             "iteration": report.get("final_iteration")}, 0)
        log_run_files(scalars.mlflow, scalars.mlflow.run_dir)
    scalars.close()


def log_run_files(tracked: MlflowRun, run: Path) -> None:
    """report.html, report.md, config.yaml and the kept model as ONNX (where the export extra
    is installed) as the MLflow run's artifacts."""
    for name in (REPORT_HTML, REPORT_MD, runs.CONFIG):
        tracked.log_artifact(run / name)
    try:
        with tempfile.TemporaryDirectory() as folder:
            onnx = Path(folder) / "model.onnx"
            export_onnx(run, onnx)
            tracked.log_artifact(onnx)
    except UserError as err:
        log.warning("MLflow: the kept model is not logged as ONNX: %s", err)


def run_step(directory: Path, step: Callable, config, quiet: bool, run: Path,
             **inputs) -> Path:
    """Run a training step once: skip it when finished, resume it when started. A finished
    step whose weights fail their checksum is resumed, which rewrites them from the last
    checkpoint. ``inputs`` (the loaded data) go to the step; its time goes to ``run``'s
    timings."""
    distributed.barrier()  # all ranks look at the same files
    if not (directory / runs.METRICS).is_file() or not weights_intact(directory / runs.MODEL):
        with timed(run, directory):
            step(config, directory, resume=(directory / runs.CONFIG).is_file(), quiet=quiet,
                 **inputs)
    return directory


def weights_intact(path: Path) -> bool:
    try:
        runs.load_weights(path)
        return True
    except CorruptFile as err:
        warnings.warn(f"{err}; recomputing it", stacklevel=2)
        return False
