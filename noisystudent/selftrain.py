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

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

from . import distributed, runs
from .config import SelfTrainConfig, build, to_dict
from .errors import CorruptFile, UserError
from .pseudo_label import pseudo_label, pseudo_labels_complete
from .report import REPORT_JSON, write_report
from .student import train_student
from .train import share_split, train


def self_train(config: SelfTrainConfig | None, out: str | Path, resume: bool = False,
               quiet: bool = False) -> dict:
    run = open_selftrain_run(config, out, resume)
    distributed.barrier()  # rank 0 has written config.yaml
    config = build(SelfTrainConfig, runs.read_yaml(run / runs.CONFIG))
    config.validate()

    # 1. Train a teacher on the labeled images (or start from a finished run).
    teacher = Path(config.teacher_run) if config.teacher_run else run_step(
        run / "iter0-teacher", train, config.teacher_config(), quiet)
    for k in range(1, config.iterations + 1):
        iteration = run / f"iter{k}"
        # 2. The clean teacher pseudo-labels the unlabeled images.
        labels = iteration / "pseudo-labels"
        if not pseudo_labels_complete(labels):
            distributed.barrier()  # every rank has looked before rank 0 removes it
            if distributed.is_main():
                shutil.rmtree(labels, ignore_errors=True)  # unfinished or torn: redone
            distributed.barrier()
            pseudo_label(teacher, labels, config.pseudo_label_config(), config.unlabeled, quiet)
        # 3. A noised student learns the labeled and pseudo-labeled images.
        student = iteration / "student"
        share_split(teacher, student)
        run_step(student, train_student, config.student_config(k, str(labels)), quiet)
        # 4. The student becomes the teacher; 5. repeat.
        teacher = student
    if not distributed.is_main():  # the report's evaluations run once, on rank 0
        distributed.barrier()
        return runs.read_json(run / REPORT_JSON)
    report = write_report(run, config, quiet)
    distributed.barrier()
    return report


def open_selftrain_run(config: SelfTrainConfig | None, out: str | Path, resume: bool) -> Path:
    run = Path(out)
    if resume:
        if not (run / runs.CONFIG).is_file():
            raise UserError(f"nothing to resume in {run}: it has no {runs.CONFIG}")
        runs.remove_stale_temporaries(run)
        return run
    if (run / runs.CONFIG).exists():
        raise UserError(f"{run} already holds a self-training run; pass --resume or another --out")
    config.validate()
    run.mkdir(parents=True, exist_ok=True)
    runs.write_yaml(run / runs.CONFIG, to_dict(config))
    return run


def run_step(directory: Path, step: Callable, config, quiet: bool) -> Path:
    """Run a training step once: skip it when finished, resume it when started. A finished
    step whose weights fail their checksum is resumed, which rewrites them from the last
    checkpoint."""
    distributed.barrier()  # all ranks look at the same files
    if not (directory / runs.METRICS).is_file() or not weights_intact(directory / runs.MODEL):
        step(config, directory, resume=(directory / runs.CONFIG).is_file(), quiet=quiet)
    return directory


def weights_intact(path: Path) -> bool:
    try:
        runs.load_weights(path)
        return True
    except CorruptFile as err:
        warnings.warn(f"{err}; recomputing it", stacklevel=2)
        return False
