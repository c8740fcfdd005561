"""Train a noised student on labeled + pseudo-labeled images (step 3 of Noisy Student)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from noisystudent.core import runs
from noisystudent.core.config import StudentConfig
from noisystudent.core.errors import UserError
from noisystudent.data.loaders import ImageBatches, LabeledAndPseudoBatches
from noisystudent.data.sources import RunData
from noisystudent.data.unlabeled import Unlabeled
from noisystudent.deploy.cost import count_flops
from noisystudent.labels.directory import read_pseudo_labels, read_summary
from noisystudent.labels.selected_shards import SelectedShardBatches
from noisystudent.models.saved import load_trained
from noisystudent.models.transforms import InputSpec
from noisystudent.noise import make_augment
from noisystudent.training.engine import fit
from noisystudent.training.tasks import NoisyStudentTask

from .stage import build_model, start_stage


@runs.holds_lock
def train_student(config: StudentConfig | None, out: str | Path, *, data: RunData,
                  unlabeled: Unlabeled, resume: bool = False, quiet: bool = False) -> dict:
    """Noised student training into a run directory; returns metrics.json's content.

    ``data`` holds the labeled pool and the test set, ``unlabeled`` the images the
    pseudo-labels (``config.pseudo_labels``) index into (unused when the selected images
    were rewritten as tar shards, which stream); the self-training loop loads both once for
    every stage."""
    stage = start_stage(config, out, resume=resume, quiet=quiet, config_cls=StudentConfig,
                        data=data)
    config, device, train_set = stage.config, stage.device, data.train
    labeled = train_set.subset(stage.labeled_split()["labeled"])

    directory = Path(config.pseudo_labels)
    summary = read_summary(directory)
    teacher_classes = summary.get("classes", train_set.classes)
    if teacher_classes != train_set.classes:
        raise UserError(f"the pseudo-labels' classes {teacher_classes} differ from the data's "
                        f"{train_set.classes}; label with a teacher trained on these classes")

    model, spec = build_model(config, len(train_set.classes), device, labeled.images)
    check_student_size(model, spec, summary["teacher"]["run"])
    pseudo_batch = config.batch_size * config.unlabeled_ratio
    steps = steps_per_epoch(config, summary["selected"])
    if "selected_shards" in summary:  # streamed sources: the selected images as tar shards
        pseudo = SelectedShardBatches(
            [directory / name for name in summary["selected_shards"]], pseudo_batch, device,
            # decoded at the model's size where that is smaller: the noise runs there
            num_classes=len(train_set.classes), size=min(labeled.images.shape[-1], spec.size),
            channels=labeled.channels, temperature=config.target_temperature,
            seed=config.seed + 1, steps=steps, workers=config.workers,
            buffer=config.shuffle_buffer)
    else:
        index, targets, _ = read_pseudo_labels(directory, config.target_temperature)
        if len(unlabeled) != summary["unlabeled_images"]:
            raise UserError(f"the pseudo-labels index {summary['unlabeled_images']} unlabeled "
                            f"images, the student was given {len(unlabeled)}")
        pseudo = ImageBatches.training(unlabeled.images[index], targets, pseudo_batch, device,
                                       seed=config.seed + 1, steps=steps)
    loader = LabeledAndPseudoBatches(
        ImageBatches.training(labeled.images, labeled.labels, config.batch_size, device,
                              seed=config.seed, steps=steps), pseudo)
    weight = config.unlabeled_weight * (config.unlabeled_ratio
                                        if config.loss_weighting == "per-image" else 1)
    task = NoisyStudentTask(model, make_augment(config), spec, unlabeled_weight=weight,
                            label_smoothing=config.label_smoothing,
                            consistency_weight=config.consistency_weight,
                            consistency_threshold=config.consistency_threshold,
                            weak_augment=make_augment(config.model_copy(
                                update={"augment": "light"})), device=device)
    fitted = fit(task, loader, settings=config, stage=stage)
    return stage.finish(task.final_model(), spec, {
        "pseudo_labels": str(config.pseudo_labels), "labeled_images": len(labeled),
        "pseudo_labeled_images": summary["selected"],
        "epochs": math.ceil(fitted.steps / len(loader)), "steps": fitted.steps,
        "passes": fitted.steps * pseudo_batch / summary["selected"],
        "decay_segments": fitted.decay_segments})


def steps_per_epoch(config: StudentConfig, pseudo_labeled: int) -> int:
    """Steps per epoch: as set, or enough for ``passes`` over the pseudo-labeled images in all,
    or one pass per epoch."""
    pseudo_batch = config.batch_size * config.unlabeled_ratio
    if config.steps_per_epoch:
        return config.steps_per_epoch
    if config.passes:
        return max(1, math.ceil(config.passes * pseudo_labeled / (pseudo_batch * config.epochs)))
    return max(1, pseudo_labeled // pseudo_batch)


def check_student_size(student: torch.nn.Module, spec: InputSpec,
                       teacher_run: str | Path) -> None:
    """Noisy Student asks for a student equal to or larger than its teacher: warn otherwise.
    Size is compute, forward FLOPs per image each at its own resolution: a 28 px ResNet-20
    (62 MFLOPs) is smaller than a Lite0 teacher at 96 px (141 MFLOPs), though the Lite0 has
    12x its parameters."""
    teacher = load_trained(teacher_run, torch.device("cpu"))
    teacher_flops = count_flops(teacher.model, teacher.spec)
    flops = count_flops(student, spec)
    if flops < teacher_flops:
        warnings.warn(f"the student ({flops / 1e6:,.0f} MFLOPs per image at {spec.size} px) is "
                      f"smaller than its teacher ({teacher_flops / 1e6:,.0f} MFLOPs at "
                      f"{teacher.spec.size} px); Noisy Student asks for an equal or larger "
                      "student (distill compresses a model)", stacklevel=2)
