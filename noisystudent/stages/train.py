"""``noisystudent train``: supervised transfer learning on a few labels, in one run directory."""

from __future__ import annotations

import math
from pathlib import Path

from noisystudent.core import runs
from noisystudent.core.config import TrainConfig
from noisystudent.data.loaders import ImageBatches
from noisystudent.data.sources import RunData
from noisystudent.noise import make_augment
from noisystudent.training.engine import fit
from noisystudent.training.tasks import SupervisedTask

from .stage import build_model, start_stage


@runs.holds_lock
def train(config: TrainConfig | None, out: str | Path, *, resume: bool = False,
          quiet: bool = False, data: RunData | None = None) -> dict:
    """Fine-tune ``config.model`` on the labeled split; returns metrics.json's content.
    ``data``: the images, when the caller (the self-training loop) has them loaded."""
    stage = start_stage(config, out, resume=resume, quiet=quiet, data=data)
    config, device, train_set = stage.config, stage.device, stage.data.train
    split = stage.labeled_split()
    labeled = train_set.subset(split["labeled"])
    model, spec = build_model(config, len(train_set.classes), device, labeled.images)
    loader = ImageBatches.training(labeled.images, labeled.labels, config.batch_size, device,
                                   seed=config.seed, steps=config.steps_per_epoch)
    task = SupervisedTask(model, make_augment(config), spec,
                          label_smoothing=config.label_smoothing, device=device)

    def validate(epoch: int) -> dict:
        measured = stage.val_metrics(task.final_model(), spec)
        return {"val_top1": measured["val_top1"]} if measured else {}

    fitted = fit(task, loader, settings=config, stage=stage, on_epoch_end=validate)
    return stage.finish(task.final_model(), spec, {
        "pretrained": config.pretrained, "labeled_images": len(labeled),
        "epochs": math.ceil(fitted.steps / len(loader)), "steps": fitted.steps,
        "decay_segments": fitted.decay_segments})
