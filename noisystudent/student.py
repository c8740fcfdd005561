"""Train a noised student on labeled + pseudo-labeled images (step 3 of Noisy Student)."""

from __future__ import annotations

from pathlib import Path

from .config import StudentConfig
from .engine import InMemoryLoader, PairedLoader, fit
from .errors import UserError
from .pseudo_label import read_pseudo_labels, unlabeled_images
from .tasks import NoisyStudentTask
from .train import build_student, labeled_split, optimization, start_run
from .transforms import make_augment


def train_student(config: StudentConfig, out: str | Path, resume: bool = False,
                  quiet: bool = False) -> dict:
    """Noised student training into a run directory; returns metrics.json's content."""
    run = start_run(config, out, resume, StudentConfig)
    run_dir, config, device, train_set = run.run_dir, run.config, run.device, run.train_set
    labeled = train_set.subset(labeled_split(run_dir, train_set.labels, config)["labeled"])

    index, probs, summary = read_pseudo_labels(config.pseudo_labels)
    teacher_classes = summary.get("classes", train_set.classes)
    if probs.shape[1] != len(train_set.classes) or teacher_classes != train_set.classes:
        raise UserError(f"the pseudo-labels' classes {teacher_classes} differ from the data's "
                        f"{train_set.classes}; label with a teacher trained on these classes")
    unlabeled, _ = unlabeled_images(summary["teacher"]["run"], summary["unlabeled_folder"],
                                    summary["max_images"])
    pseudo_images = unlabeled.images[index]

    model, spec = build_student(config, len(train_set.classes), device)
    pseudo_batch = config.batch_size * config.unlabeled_ratio
    steps = config.steps_per_epoch or max(1, len(index) // pseudo_batch)
    loader = PairedLoader(
        InMemoryLoader(labeled.images, labeled.labels, config.batch_size, device, shuffle=True,
                       drop_last=True, seed=config.seed, steps=steps),
        InMemoryLoader(pseudo_images, probs, pseudo_batch, device, shuffle=True, drop_last=True,
                       seed=config.seed + 1, steps=steps))
    optimizer, scheduler, ema = optimization(model, config, len(loader))
    augment = make_augment(config.augment, config.randaugment_ops, config.randaugment_magnitude)
    task = NoisyStudentTask(model, augment, spec, config.unlabeled_weight,
                            config.label_smoothing)
    fit(task, optimizer, scheduler, loader, config.epochs, run_dir, device, run.dtype,
        config.seed, ema, resume, not quiet)
    final = ema.module if ema is not None else model
    return run.finish(final, spec, quiet, {
        "pseudo_labels": str(config.pseudo_labels), "labeled_images": len(labeled),
        "pseudo_labeled_images": len(index), "epochs": config.epochs,
        "steps": config.epochs * len(loader)})
