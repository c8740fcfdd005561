"""The self-training report: a markdown table per iteration and two PNG plots."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from matplotlib.figure import Figure

from noisystudent.core import runs, timings
from noisystudent.core.device import resolve_device
from noisystudent.core.keep import Comparison, as_dicts, kept_step, untrusted_steps
from noisystudent.core.layout import REPORT_JSON, SelfTrainLayout, role
from noisystudent.data.imageset import ImageSet
from noisystudent.labels.directory import read_summary
from noisystudent.models.build import saved_parameter_count

from .evaluate import evaluate_corruptions
from .format import number, percent
from .robustness import CORRUPTION_TYPES, SEVERITIES, corrupted_sets, corruption_names

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
ACCURACY_PNG = "accuracy.png"
CORRUPTIONS_PNG = "corruptions.png"


def write_report(run: Path, config, test_set: ImageSet | None, quiet: bool = False) -> dict:
    """report.md, report.json and the plots of a finished self-training run; the corruption
    errors are measured on ``test_set`` (the loop's, loaded once) and cached per run."""
    device = resolve_device(config.device)
    rows = []
    teacher_dir = None
    layout = SelfTrainLayout(run, config.teacher_run)
    times = timings.read(run)
    finetuned = config.fine_tunes and (layout.finetune / runs.METRICS).is_file()
    for step in layout.steps(config.iterations, finetuned):
        model_run = step.run
        spent = [times.get(timings.step_name(run, path)) for path in (step.labels, model_run)
                 if path is not None]
        metrics = runs.read_json(model_run / runs.METRICS)
        info = runs.read_json(model_run / runs.MODEL_INFO)
        summary = read_summary(step.labels) if step.labels else {}
        row = {"iteration": step.iteration, "role": step.role, "finetuned": step.finetuned,
               "run": str(model_run), "model": info["model"],
               "image_size": info["input"]["size"],
               "parameters": saved_parameter_count(model_run / runs.MODEL),
               "pseudo_label_accuracy": summary.get("pseudo_label_accuracy"),
               "pseudo_labeled": summary.get("selected"), "unlabeled_images":
               summary.get("unlabeled_images"), "val_top1": metrics.get("val_top1"),
               "val_loss": metrics.get("val_loss"), "val_correct": metrics.get("val_correct"),
               "classes": len(metrics.get("per_class", {})),
               "train_ce": last_training_loss(model_run),
               "val_images": metrics.get("val_images"), "test_top1": metrics["test_top1"],
               "minutes": sum(spent) / 60 if spent and None not in spent else None}
        if config.corruptions:
            teacher_dir = teacher_dir or model_run
            measured = evaluate_corruptions(model_run, device, quiet=quiet, baseline=teacher_dir,
                                            images=config.corruption_images, test_set=test_set)
            row.update(mce=measured["mce"], mean_corruption_error=measured["mean_error"],
                       corruption_errors=measured["errors"], corruption_images=measured["images"])
        rows.append(row)

    kept, comparisons, chosen_by = kept_step(rows, untrusted_steps(run, config.iterations))
    paired = {c.later: c for c in comparisons}
    regressions = [regression(rows[i - 1], row, runs.read_yaml(Path(row["run"]) / runs.CONFIG),
                              paired.get(row["role"])) for i, row in enumerate(rows) if i]
    regressions = [line for line in regressions if line]
    for line in regressions:
        log.warning("warning: %s", line)
    table = markdown_table(rows, kept)
    plot_accuracy(rows, run / ACCURACY_PNG)
    if config.corruptions:
        plot_corruptions(rows[0], rows[-1], run / CORRUPTIONS_PNG)
    text = (f"# Noisy Student self-training: {run}\n\n{table}\n"
            f"{kept_line(rows[kept], chosen_by)}\n\n")
    text += "".join(f"- {c.sentence()}.\n" for c in comparisons) + ("\n" if comparisons else "")
    text += "".join(f"**Warning**: {line}\n\n" for line in regressions)
    if config.corruptions:
        text += (f"mCE is relative to the iteration-0 teacher (= 100), over {CORRUPTION_TYPES} "
                 f"corruptions x {len(SEVERITIES)} "
                 f"severities of {rows[0]['corruption_images']} test images.\n\n"
                 f"![corruption error]({CORRUPTIONS_PNG})\n")
    text += (f"\nminutes: each model's wall time, its training and the labeling it learned "
             f"from ({timings.TIMINGS}; the report's own evaluations not included).\n")
    text += f"\n![test top-1 per iteration]({ACCURACY_PNG})\n"
    text += "\nWhat each teacher labeled, as pictures: [report.html](report.html).\n"
    runs.write_text(run / REPORT_MD, text)
    final = rows[kept]
    report = {"rows": rows, "final_iteration": final["iteration"], "final_role": final["role"],
              "final_run": relative_run(Path(final["run"]), run),
              "final_test_top1": final["test_top1"],
              "final_chosen_by": chosen_by, "comparisons": as_dicts(comparisons),
              "regressions": regressions}
    runs.write_json(run / REPORT_JSON, report)
    log.info("%s", table)
    return report


def prepare_corruptions(config, test_set: ImageSet | None, quiet: bool = False) -> None:
    """Make (or find cached) the corrupted test images the report will measure, so that a
    budgeted run spends their minutes before its last student is planned, not after it (one
    core made 200 Fashion-MNIST images' 15,000 corrupted versions in about 25 s)."""
    if config.corruptions and test_set is not None:
        count = min(config.corruption_images or len(test_set), len(test_set))
        corrupted_sets(test_set.images[:count], corruption_names(), quiet)


def add_time_section(run: Path) -> dict:
    """The minutes each step used (timings.json) beside those planned (plan.json, under a
    budget), appended to report.md and report.json once the report itself is timed."""
    used, plan = timings.read(run), timings.planned(run)
    planned = plan.get("seconds", {})
    budget = plan.get("budget_minutes")
    steps = list(dict.fromkeys([*planned, *used]))
    lines = ["| step | planned minutes | used minutes |", "| --- | --- | --- |"]
    for step in steps:
        lines.append(f"| {step} | {number(_of(planned, step))} | {number(_of(used, step))} |")
    total = sum(used.values()) / 60
    head = (f"Time: {total:.1f} min used of a {budget:g} min budget ({total / budget:.0%})"
            if budget else f"Time: {total:.1f} min (no budget)")
    text = f"\n{head}; per step (plan.json, timings.json):\n\n" + "\n".join(lines) + "\n"
    runs.write_text(run / REPORT_MD, (run / REPORT_MD).read_text() + text)
    report = runs.read_json(run / REPORT_JSON)
    report["time"] = {"budget_minutes": budget, "used_minutes": total,
                      "steps": {step: {"planned_minutes": _of(planned, step),
                                       "used_minutes": _of(used, step)} for step in steps}}
    runs.write_json(run / REPORT_JSON, report)
    log.info("%s", head)
    return report


def _of(seconds: dict[str, float], step: str) -> float | None:
    return seconds[step] / 60 if step in seconds else None


def kept_row(rows: list[dict]) -> int:
    """The row of the model the run keeps (keep.py): never below the teacher on validation,
    else the later step unless validation shows it worse beyond chance; the last when the
    split has no validation images."""
    return kept_step(rows)[0]


def kept_line(row: dict, chosen_by: str) -> str:
    if row.get("val_top1") is None:
        return (f"Kept: {row['role']}, the last model, unchecked: with no validation images "
                f"nothing shows whether it fell below its teacher.")
    how = ("the latest step no worse than the teacher on validation and not worse beyond "
           "chance than the step kept before it" if chosen_by != "validation"
           else "the best on validation")
    return (f"Kept: {row['role']}, {how} ({percent(row['val_top1'])} of {row['val_images']} "
            f"held-out labeled images); `export`, `predict` and `evaluate` on this run "
            f"directory use it.")


# Below these, a student from scratch is more likely to fall under its teacher: too few images
# or passes to learn a network from nothing, where a pretrained student starts from features.
SMALL_PILE = 10_000
SHORT_PASSES = 3


def regression(teacher: dict, student: dict, config: dict,
               paired: Comparison | None = None) -> str | None:
    """One line when ``student`` ends below ``teacher`` (on validation, else on the test set),
    how sure that is (``paired``: the two compared image by image on validation) and the
    likely reasons; None when it does not."""
    key = "val_top1" if teacher.get("val_top1") is not None and \
        student.get("val_top1") is not None else "test_top1"
    if teacher.get(key) is None or student.get(key) is None or student[key] >= teacher[key]:
        return None
    reasons = []
    if student.get("unlabeled_images") is not None and student["unlabeled_images"] < SMALL_PILE:
        reasons.append(f"a small unlabeled pile ({student['unlabeled_images']:,} images)")
    if config.get("pretrained") == "none":
        reasons.append("a student trained from scratch (pretrained: none)")
    passes = config.get("passes")
    if passes and passes < SHORT_PASSES:
        reasons.append(f"a short student ({passes:g} passes)")
    chance = math.log(student["classes"]) if student.get("classes", 0) > 1 else None
    if chance and student.get("train_ce") is not None and \
            student["train_ce"] > UNCONVERGED * chance:
        reasons.append(f"its training did not converge (cross-entropy {student['train_ce']:.2f} "
                       f"at the end, {chance:.2f} at chance): try a lower lr")
    where = (f"validation ({student['val_images']} images)" if key == "val_top1" and
             student.get("val_images") else "validation" if key == "val_top1" else "the test set")
    sure = f"; {paired.sentence()}" if paired is not None else ""
    return (f"{student['role']} ends below {teacher['role']} on {where} "
            f"({percent(student[key])} < {percent(teacher[key])}){sure}; if it is worse, "
            "the likely reasons: " + ("; ".join(reasons) if reasons else
                                      "none of the usual (a small unlabeled pile, a "
                                      "from-scratch or short student); check its noise and "
                                      "labels") + ".")


def last_training_loss(model_run: Path) -> float | None:
    """The cross-entropy on labeled images of a step's last epoch (metrics.jsonl)."""
    path = model_run / runs.METRICS_LOG
    rows = runs.read_jsonl(path) if path.is_file() else []
    return rows[-1].get("ce") if rows else None


# A student whose labeled cross-entropy ends above this share of chance's (ln classes) did
# not learn: on the photo test bed one from-scratch student ended at 2.01 against 2.30.
UNCONVERGED = 0.8


def relative_run(model_run: Path, run: Path) -> str:
    """A step's directory as the run's report stores it: relative to the run when inside it
    (the run directory can move), else as given (a ``teacher_run``)."""
    try:
        return str(model_run.relative_to(run))
    except ValueError:
        return str(model_run)


def table_cells(rows: list[dict], kept: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The iteration table's header and cells, as report.md and report.html show them."""
    header = ["iteration", "model", "parameters", "pseudo-label accuracy", "validation top-1",
              "test top-1", "mean corruption error", "mCE", "minutes"]
    cells = []
    for i, r in enumerate(rows):
        name = r.get("role") or role(r["iteration"])
        name += ", kept" if i == kept else ""
        cells.append([f"{r['iteration']} ({name})", f"{r['model']} @{r['image_size']}",
                      f"{r['parameters'] / 1e6:.2f} M", percent(r['pseudo_label_accuracy']),
                      percent(r.get('val_top1')), percent(r['test_top1']),
                      percent(r.get('mean_corruption_error'), 1),
                      number(r.get("mce")), number(r.get('minutes'))])
    return header, cells


def markdown_table(rows: list[dict], kept: int | None = None) -> str:
    header, cells = table_cells(rows, kept)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    runs.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def plot_accuracy(rows: list[dict], path: Path) -> None:
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot([r["iteration"] for r in rows], [100 * r["test_top1"] for r in rows], marker="o")
    ax.set_xlabel("iteration (0 = supervised teacher)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_xticks([r["iteration"] for r in rows])
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_corruptions(teacher: dict, student: dict, path: Path) -> None:
    names = list(teacher["corruption_errors"])
    mean = {key: [100 * sum(r["corruption_errors"][n]) / len(SEVERITIES) for n in names]
            for key, r in (("teacher", teacher), ("student", student))}
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], mean["teacher"], width=0.4, label="teacher (iteration 0)")
    ax.bar([i + 0.2 for i in x], mean["student"], width=0.4,
           label=f"student (iteration {student['iteration']})")
    ax.set_xticks(list(x), [n.replace("_", " ") for n in names], rotation=50, ha="right")
    ax.set_ylabel("top-1 error, mean over severities (%)")
    ax.legend()
    _save(fig, path)
