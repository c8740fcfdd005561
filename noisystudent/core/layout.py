"""The layout of a self-training run directory, and the role each of its steps plays.

    RUN/iter0-teacher/          the supervised teacher (unless ``teacher_run`` names one)
    RUN/iterK/pseudo-labels/    the images iteration K's teacher labeled
    RUN/iterK/student/          iteration K's noised student
    RUN/finetune/               the last student, fine-tuned on the labeled images

Each entry is a step of the run: the teacher, a labeling, a student, the fine-tuning. The
training steps are stages (``stages/stage.py``): run directories of their own, with a config,
a split, checkpoints and a model. The loop (``stages/selftrain.py``), its ``--resume``, the
plan (``plan/``) and the report (``reports/``) all find the steps here, and name them by
their paths (``timings.json``, ``plan.json``); the names on disk never change, so older run
directories still resume and report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import runs

TEACHER_DIR = "iter0-teacher"
ITERATION_DIR = "iter{}"
PSEUDO_LABELS_DIR = "pseudo-labels"
STUDENT_DIR = "student"
FINETUNE_DIR = "finetune"
REPORT_JSON = "report.json"

# The steps' keys in timings.json and plan.json are their paths inside the run; two more keys
# are the run's own: the plan timing this machine, and the report's evaluations.
TEACHER_KEY = TEACHER_DIR
PLAN_KEY = "plan"
REPORT_KEY = "report"
CORRUPTIONS_KEY = "report-corruptions"  # the report's corrupted test images, made first


def labels_key(k: int) -> str:
    """Iteration ``k``'s labeling: its key, and its path inside the run."""
    return f"{ITERATION_DIR.format(k)}/{PSEUDO_LABELS_DIR}"


def student_key(k: int) -> str:
    """Iteration ``k``'s student: its key, and its path inside the run."""
    return f"{ITERATION_DIR.format(k)}/{STUDENT_DIR}"


def kept_model(run: str | Path) -> Path:
    """The model directory a command given ``run`` uses: ``run`` itself when it holds a model;
    for a finished self-training run, the step its report kept (keep.py: never one below the
    teacher on validation)."""
    run = Path(run)
    report = run / REPORT_JSON
    if (run / runs.MODEL).is_file() or not report.is_file():
        return run
    try:
        kept = json.loads(report.read_text()).get("final_run")
    except (OSError, ValueError):
        return run
    if not kept:  # a report written before runs kept the best step
        return run
    return Path(kept) if Path(kept).is_absolute() else run / kept


def role(iteration: int, finetuned: bool = False) -> str:
    """The step's name in the report: "teacher", "student K" or "student K, fine-tuned"."""
    name = "teacher" if iteration == 0 else f"student {iteration}"
    return f"{name}, fine-tuned" if finetuned else name


@dataclass(frozen=True)
class Step:
    """One model of the run: its iteration, run directory and the pseudo-labels it learned
    from (None for the teacher and the fine-tuned student)."""

    iteration: int
    run: Path
    labels: Path | None = None
    finetuned: bool = False

    @property
    def role(self) -> str:
        return role(self.iteration, self.finetuned)


class SelfTrainLayout:
    """Where each step of the self-training run in ``run`` lives; ``teacher_run``, when set,
    is a finished run used as the iteration-0 teacher instead of ``run/iter0-teacher``."""

    def __init__(self, run: str | Path, teacher_run: str | Path | None = None):
        self.run = Path(run)
        self.teacher_run = teacher_run

    @property
    def teacher(self) -> Path:
        return Path(self.teacher_run) if self.teacher_run else self.run / TEACHER_KEY

    def iteration(self, k: int) -> Path:
        return self.run / ITERATION_DIR.format(k)

    def pseudo_labels(self, k: int) -> Path:
        return self.run / labels_key(k)

    def student(self, k: int) -> Path:
        return self.run / student_key(k)

    @property
    def finetune(self) -> Path:
        return self.run / FINETUNE_DIR

    def steps(self, iterations: int, finetune: bool) -> list[Step]:
        """The teacher, each student and (with ``finetune``) the fine-tuned last student."""
        steps = [Step(0, self.teacher)]
        steps += [Step(k, self.student(k), self.pseudo_labels(k))
                  for k in range(1, iterations + 1)]
        if finetune:
            steps.append(Step(iterations, self.finetune, finetuned=True))
        return steps
