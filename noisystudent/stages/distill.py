"""``noisystudent distill``: a student learns a frozen teacher's temperature-softened outputs,
in the same training loop as ``train``, and a compression report compares the two
(``reports/compression.py``)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from noisystudent.core import distributed, runs
from noisystudent.core.config import DistillConfig
from noisystudent.core.errors import UserError
from noisystudent.data.images import load_unlabeled_folder
from noisystudent.data.imageset import ImageSet
from noisystudent.data.loaders import ConcatenatedBatches, ImageBatches
from noisystudent.models.saved import load_trained
from noisystudent.noise import make_augment
from noisystudent.reports.compression import compression_report
from noisystudent.training.engine import fit
from noisystudent.training.tasks import DistillTask

from .stage import build_model, share_split, start_stage

log = logging.getLogger(__name__)


def student_pools(train_set: ImageSet, split: dict, mode: str,
                  extra_unlabeled: ImageSet | None) -> tuple[ImageSet | None, ImageSet | None]:
    """(labeled, unlabeled) images the student sees; unlabeled ones carry the label -1."""
    labeled = train_set.subset(split["labeled"]) if mode in ("labeled", "both") else None
    unlabeled = None
    if mode in ("unlabeled", "both"):
        parts = [train_set.subset(split["unlabeled"])]
        if extra_unlabeled is not None:
            parts.append(extra_unlabeled)
        images = torch.cat([p.images for p in parts])
        unlabeled = ImageSet(images, torch.full((len(images),), -1, dtype=torch.int64),
                             train_set.classes)
    for name, pool in (("labeled", labeled), ("unlabeled", unlabeled)):
        if pool is not None and len(pool) == 0:
            raise UserError(f"data_mode {mode} needs {name} images and there are none")
    return labeled, unlabeled


def student_loader(labeled: ImageSet | None, unlabeled: ImageSet | None,
                   config: DistillConfig, device: torch.device):
    """labeled or unlabeled: batches of one kind. both: every step a labeled batch plus an
    unlabeled_ratio times larger unlabeled one, so the labels keep their weight however large
    the unlabeled pool is."""
    if labeled is None or unlabeled is None:
        pool = labeled or unlabeled
        return ImageBatches.training(pool.images, pool.labels, config.batch_size, device,
                                     seed=config.seed, steps=config.steps_per_epoch)
    unlabeled_batch = config.batch_size * config.unlabeled_ratio
    steps = config.steps_per_epoch or max(1, len(unlabeled) // unlabeled_batch)
    return ConcatenatedBatches(
        ImageBatches.training(labeled.images, labeled.labels, config.batch_size, device,
                              seed=config.seed, steps=steps),
        ImageBatches.training(unlabeled.images, unlabeled.labels, unlabeled_batch, device,
                              seed=config.seed + 1, steps=steps))


@runs.holds_lock
def distill(config: DistillConfig | None, out: str | Path, *, resume: bool = False,
            quiet: bool = False) -> dict:
    """Train ``config.model`` to mimic the teacher run; returns metrics.json's content."""
    stage = start_stage(config, out, resume=resume, quiet=quiet, config_cls=DistillConfig)
    config, device, train_set = stage.config, stage.device, stage.data.train
    teacher = load_trained(config.teacher, device)
    if teacher.classes != train_set.classes:
        raise UserError(f"teacher classes {teacher.classes} differ from the data's "
                        f"{train_set.classes}; use a teacher trained on these classes")
    if teacher.config["data"] == config.data and \
            teacher.config["labels_per_class"] == config.labels_per_class:
        share_split(teacher.run_dir, stage.run_dir)  # unlabeled mode must not see its labels
    split = stage.labeled_split()
    extra = None
    if config.unlabeled:
        extra = load_unlabeled_folder(config.unlabeled, train_set.images.shape[-1],
                                      train_set.channels, config.strict)
        extra.labels = torch.full_like(extra.labels, -1)
    labeled, unlabeled = student_pools(train_set, split, config.data_mode, extra)

    student, spec = build_model(config, len(train_set.classes), device,
                                 (labeled or unlabeled).images)
    loader = student_loader(labeled, unlabeled, config, device)
    task = DistillTask(student, teacher.model, make_augment(config), spec,
                       teacher_spec=teacher.spec, temperature=config.temperature,
                       kd_weight=config.kd_weight, ce_weight=config.ce_weight,
                       feature_weight=config.feature_weight, consistent=config.consistent,
                       teacher_dtype=stage.eval_dtype, label_smoothing=config.label_smoothing,
                       device=device)
    fitted = fit(task, loader, settings=config, stage=stage)
    metrics = stage.finish(task.final_model(), spec, {
        "teacher": str(config.teacher), "data_mode": config.data_mode,
        "labeled_images": len(labeled) if labeled else 0,
        "unlabeled_images": len(unlabeled) if unlabeled else 0,
        "epochs": math.ceil(fitted.steps / len(loader)), "steps": fitted.steps})
    if distributed.is_main():  # measured once, in one process
        log.info(compression_report(stage.run_dir, config, metrics["test_top1"]))
    distributed.barrier()
    return metrics
