"""Train a noised student on labeled + pseudo-labeled images (step 3 of Noisy Student)."""

from __future__ import annotations

from pathlib import Path

from .config import StudentConfig
from .data.imageset import ImageSet
from .data.loaders import ImageBatches, LabeledAndPseudoBatches
from .engine import fit
from .errors import UserError
from .pseudo_label import read_pseudo_labels
from .stage import RunData, build_model, start_stage
from .tasks import NoisyStudentTask
from .transforms import make_augment


def train_student(config: StudentConfig | None, out: str | Path, *, data: RunData,
                  unlabeled: ImageSet, resume: bool = False, quiet: bool = False) -> dict:
    """Noised student training into a run directory; returns metrics.json's content.

    ``data`` holds the labeled pool and the test set, ``unlabeled`` the images the
    pseudo-labels (``config.pseudo_labels``) index into; the self-training loop loads both
    once for every stage."""
    stage = start_stage(config, out, resume=resume, quiet=quiet, config_cls=StudentConfig,
                        data=data)
    config, device, train_set = stage.config, stage.device, data.train
    labeled = train_set.subset(stage.labeled_split()["labeled"])

    index, probs, summary = read_pseudo_labels(config.pseudo_labels)
    teacher_classes = summary.get("classes", train_set.classes)
    if probs.shape[1] != len(train_set.classes) or teacher_classes != train_set.classes:
        raise UserError(f"the pseudo-labels' classes {teacher_classes} differ from the data's "
                        f"{train_set.classes}; label with a teacher trained on these classes")
    if len(unlabeled) != summary["unlabeled_images"]:
        raise UserError(f"the pseudo-labels index {summary['unlabeled_images']} unlabeled "
                        f"images, the student was given {len(unlabeled)}")
    pseudo_images = unlabeled.images[index]

    model, spec = build_model(config, len(train_set.classes), device)
    pseudo_batch = config.batch_size * config.unlabeled_ratio
    steps = config.steps_per_epoch or max(1, len(index) // pseudo_batch)
    loader = LabeledAndPseudoBatches(
        ImageBatches.training(labeled.images, labeled.labels, config.batch_size, device,
                              seed=config.seed, steps=steps),
        ImageBatches.training(pseudo_images, probs, pseudo_batch, device,
                              seed=config.seed + 1, steps=steps))
    task = NoisyStudentTask(model, make_augment(config), spec,
                            unlabeled_weight=config.unlabeled_weight,
                            label_smoothing=config.label_smoothing, device=device)
    fit(task, loader, settings=config, stage=stage)
    return stage.finish(task.final_model(), spec, {
        "pseudo_labels": str(config.pseudo_labels), "labeled_images": len(labeled),
        "pseudo_labeled_images": len(index), "epochs": config.epochs,
        "steps": config.epochs * len(loader)})
