"""``noisystudent distill``: a student learns a frozen teacher's temperature-softened outputs,
in the same training loop as ``train``, and a compression report compares the two."""

from __future__ import annotations

from pathlib import Path

import torch

from . import distributed, runs
from .compression import describe, markdown_table
from .config import DistillConfig
from .data.images import load_unlabeled_folder
from .data.imageset import ImageSet
from .engine import ConcatLoader, InMemoryLoader, fit, resolve_precision
from .errors import UserError
from .inference import load_trained
from .losses import FeatureDistillLoss, pooled_width
from .tasks import DistillTask
from .train import build_student, labeled_split, optimization, share_split, start_run
from .transforms import make_augment

COMPRESSION_MD = "compression.md"
COMPRESSION_JSON = "compression.json"


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


def student_loader(labeled: ImageSet | None, unlabeled: ImageSet | None, config,
                   device: torch.device):
    """labeled or unlabeled: batches of one kind. both: every step a labeled batch plus an
    unlabeled_ratio times larger unlabeled one, so the labels keep their weight however large
    the unlabeled pool is."""
    def loader(pool: ImageSet, batch_size: int, seed: int, steps: int) -> InMemoryLoader:
        return InMemoryLoader(pool.images, pool.labels, batch_size, device, shuffle=True,
                              drop_last=True, seed=seed, steps=steps)

    if labeled is None or unlabeled is None:
        return loader(labeled or unlabeled, config.batch_size, config.seed,
                      config.steps_per_epoch)
    unlabeled_batch = config.batch_size * config.unlabeled_ratio
    steps = config.steps_per_epoch or max(1, len(unlabeled) // unlabeled_batch)
    return ConcatLoader(loader(labeled, config.batch_size, config.seed, steps),
                        loader(unlabeled, unlabeled_batch, config.seed + 1, steps))


def distill(config: DistillConfig, out: str | Path, resume: bool = False,
            quiet: bool = False) -> dict:
    """Train ``config.model`` to mimic the teacher run; returns metrics.json's content."""
    run = start_run(config, out, resume, DistillConfig)
    run_dir, config, device, train_set = run.run_dir, run.config, run.device, run.train_set
    teacher = load_trained(config.teacher, device)
    if teacher.classes != train_set.classes:
        raise UserError(f"teacher classes {teacher.classes} differ from the data's "
                        f"{train_set.classes}; use a teacher trained on these classes")
    if teacher.config["data"] == config.data and \
            teacher.config["labels_per_class"] == config.labels_per_class:
        share_split(teacher.run_dir, run_dir)  # unlabeled mode must not see the teacher's labels
    split = labeled_split(run_dir, train_set.labels, config)
    extra = None
    if config.unlabeled:
        extra = load_unlabeled_folder(config.unlabeled, train_set.images.shape[-1],
                                      train_set.channels, config.strict)
        extra.labels = torch.full_like(extra.labels, -1)
    labeled, unlabeled = student_pools(train_set, split, config.data_mode, extra)

    student, spec = build_student(config, len(train_set.classes), device)
    loader = student_loader(labeled, unlabeled, config, device)
    feature_loss = None
    if config.feature_weight > 0 and distributed.active():
        raise UserError("feature_weight > 0 is not supported under torchrun (the features are "
                        "read outside the model's forward, which DDP needs); use 0")
    if config.feature_weight > 0:
        feature_loss = FeatureDistillLoss(pooled_width(student),
                                          pooled_width(teacher.model)).to(device)
        # The projection is part of the trainable student, so it is optimized and checkpointed.
        student.distill_projection = feature_loss
    optimizer, scheduler, ema = optimization(student, config, len(loader))
    augment = make_augment(config.augment, config.randaugment_ops, config.randaugment_magnitude)
    task = DistillTask(student, teacher.model, augment, spec, teacher.spec, config.temperature,
                       config.kd_weight, config.ce_weight, config.feature_weight, feature_loss,
                       config.consistent, run.eval_dtype, config.label_smoothing)
    fit(task, optimizer, scheduler, loader, config.epochs, run_dir, device, run.dtype,
        config.seed, ema, resume, not quiet)

    final = ema.module if ema is not None else student
    if hasattr(final, "distill_projection"):
        del final.distill_projection  # a training aid, not part of the deployed student
    metrics = run.finish(final, spec, quiet, {
        "teacher": str(config.teacher), "data_mode": config.data_mode,
        "labeled_images": len(labeled) if labeled else 0,
        "unlabeled_images": len(unlabeled) if unlabeled else 0, "epochs": config.epochs,
        "steps": config.epochs * len(loader)})
    report = compression_report(run_dir, config, metrics["test_top1"], device)
    if not quiet:
        print(report)
    return metrics


def _run_top1(run_dir: str | Path) -> float | None:
    path = Path(run_dir) / runs.METRICS
    return runs.read_json(path).get("test_top1") if path.is_file() else None


def compression_report(run_dir: Path, config: DistillConfig, student_top1: float | None,
                       device: torch.device) -> str:
    """Teacher, student without a teacher (--baseline) and distilled student, side by side."""
    cpu = torch.device("cpu")
    dtype = resolve_precision(config.precision, cpu, training=False)
    entries = [("teacher", config.teacher, _run_top1(config.teacher))]
    if config.baseline:
        entries.append(("student without teacher", config.baseline, _run_top1(config.baseline)))
    entries.append(("distilled student", run_dir, student_top1))
    rows = [describe(name, load_trained(path, cpu), top1, dtype) for name, path, top1 in entries]
    runs.write_json(run_dir / COMPRESSION_JSON, rows)
    teacher, student = rows[0], rows[-1]
    text = (f"# Compression report\n\n{markdown_table(rows)}\n"
            f"FLOPs ratio teacher/student: {teacher['mflops'] / student['mflops']:.1f}x; "
            f"latency ratio @256: "
            f"{teacher['latency_ms_batch256'] / student['latency_ms_batch256']:.1f}x. "
            f"Latency measured on the CPU ({dtype or 'fp32'}), median of repeats.\n")
    runs.write_text(run_dir / COMPRESSION_MD, text)
    return text
