"""The self-training report: a markdown table per iteration and two PNG plots."""

from __future__ import annotations

import logging
from pathlib import Path

from matplotlib.figure import Figure

from . import runs
from .data.imageset import ImageSet
from .device import resolve_device
from .evaluate import evaluate_corruptions
from .layout import SelfTrainLayout, role
from .models import saved_parameter_count
from .pseudo_label import SUMMARY

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
ACCURACY_PNG = "accuracy.png"
CORRUPTIONS_PNG = "corruptions.png"


def _percent(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def write_report(run: Path, config, test_set: ImageSet | None, quiet: bool = False) -> dict:
    """report.md, report.json and the plots of a finished self-training run; the corruption
    errors are measured on ``test_set`` (the loop's, loaded once) and cached per run."""
    device = resolve_device(config.device)
    rows = []
    teacher_dir = None
    layout = SelfTrainLayout(run, config.teacher_run)
    for step in layout.steps(config.iterations, config.fine_tunes):
        model_run = step.run
        metrics = runs.read_json(model_run / runs.METRICS)
        info = runs.read_json(model_run / runs.MODEL_INFO)
        summary = runs.read_json(step.labels / SUMMARY) if step.labels else {}
        row = {"iteration": step.iteration, "role": step.role, "finetuned": step.finetuned,
               "run": str(model_run), "model": info["model"],
               "image_size": info["input"]["size"],
               "parameters": saved_parameter_count(model_run / runs.MODEL),
               "pseudo_label_accuracy": summary.get("pseudo_label_accuracy"),
               "pseudo_labeled": summary.get("kept"), "test_top1": metrics["test_top1"]}
        if config.corruptions:
            teacher_dir = teacher_dir or model_run
            measured = evaluate_corruptions(model_run, device, quiet=quiet, baseline=teacher_dir,
                                            images=config.corruption_images, test_set=test_set)
            row.update(mce=measured["mce"], mean_corruption_error=measured["mean_error"],
                       corruption_errors=measured["errors"], corruption_images=measured["images"])
        rows.append(row)

    table = markdown_table(rows)
    plot_accuracy(rows, run / ACCURACY_PNG)
    if config.corruptions:
        plot_corruptions(rows[0], rows[-1], run / CORRUPTIONS_PNG)
    text = f"# Noisy Student self-training: {run}\n\n{table}\n"
    if config.corruptions:
        text += (f"mCE is relative to the iteration-0 teacher (= 100), over 15 corruptions x 5 "
                 f"severities of {rows[0]['corruption_images']} test images.\n\n"
                 f"![corruption error]({CORRUPTIONS_PNG})\n")
    text += f"\n![test top-1 per iteration]({ACCURACY_PNG})\n"
    runs.write_text(run / REPORT_MD, text)
    report = {"rows": rows, "final_test_top1": rows[-1]["test_top1"]}
    runs.write_json(run / REPORT_JSON, report)
    log.info("%s", table)
    return report


def markdown_table(rows: list[dict]) -> str:
    lines = ["| iteration | model | parameters | pseudo-label accuracy | test top-1 | "
             "mean corruption error | mCE |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        name = r.get("role") or role(r["iteration"])
        mce = f"{r['mce']:.1f}" if "mce" in r else "n/a"
        lines.append(f"| {r['iteration']} ({name}) | {r['model']} @{r['image_size']} | "
                     f"{r['parameters'] / 1e6:.2f} M | {_percent(r['pseudo_label_accuracy'])} | "
                     f"{_percent(r['test_top1'])} | "
                     f"{_percent(r.get('mean_corruption_error'), 1)} | {mce} |")
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
    mean = {key: [100 * sum(r["corruption_errors"][n]) / 5 for n in names]
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
