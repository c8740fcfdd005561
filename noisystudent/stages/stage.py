"""What every training stage (``train``, ``distill``, a Noisy Student student) starts from and
ends with: the run directory (created, or reopened with its saved config for ``--resume``),
device and precisions, the data, the labeled split, and at the end the saved model, its test
metrics and ``metrics.json``."""

from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from noisystudent.core import distributed, runs
from noisystudent.core.config import TrainConfig
from noisystudent.core.device import resolve_device, resolve_precision
from noisystudent.core.errors import UserError
from noisystudent.core.keep import correct_string
from noisystudent.core.settings_io import build, to_dict
from noisystudent.data.loaders import ImageBatches
from noisystudent.data.sources import RunData, load_run_data
from noisystudent.data.splits import load_split, make_split, save_split
from noisystudent.models.build import (
    configure_finetune,
    create_model,
    init_from_images,
    keep_spatial_map,
    model_input_config,
)
from noisystudent.models.inference import predict_logits
from noisystudent.models.precision import training_precision
from noisystudent.models.saved import save_model
from noisystudent.models.transforms import CleanPipeline, InputSpec, to_model_input
from noisystudent.reports.metrics import classification_metrics, nonzero_cells
from noisystudent.reports.mlflow_tracking import RECORD as MLFLOW_RECORD
from noisystudent.reports.mlflow_tracking import open_mlflow
from noisystudent.reports.tensorboard import Scalars

log = logging.getLogger(__name__)

# Seconds a stage spends after its evaluations: saving the model and metrics.json.
SAVING_SECONDS = 1.0


def open_run(config, out: str | Path, resume: bool, config_cls: type = TrainConfig):
    """Create the run directory and save its config, or reopen it for --resume with the config
    it was started with. Returns (run_dir, config)."""
    run_dir = Path(out)
    saved = run_dir / runs.CONFIG
    if resume:
        if not saved.is_file():
            raise UserError(f"nothing to resume in {run_dir}: it has no {runs.CONFIG}")
        runs.lock_run(run_dir)
        runs.remove_stale_temporaries(run_dir)
        return run_dir, build(config_cls, runs.read_yaml(saved))
    if saved.exists():
        runs.lock_run(run_dir)
        if runs.has_work(run_dir):
            raise UserError(f"{run_dir} already holds a run; pass --resume or choose another "
                            f"--out")
        # It stopped before any step did work (a bad setting): start again with this config.
        log.info("%s stopped before any work; starting it again with the new settings", run_dir)
        distributed.barrier()  # every rank has looked before rank 0 clears it
        if distributed.is_main():
            clear_setup_files(run_dir)
    distributed.barrier()  # every rank has looked before rank 0 writes
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.lock_run(run_dir)
    if distributed.is_main():  # a start killed while it wrote config.yaml left its temporary
        runs.remove_stale_temporaries(run_dir)
    runs.write_yaml(saved, to_dict(config))
    return run_dir, config


def clear_setup_files(run_dir: Path) -> None:
    """The files a run that did no work wrote, so its rerun starts afresh."""
    for path in run_dir.rglob("*"):
        if path.is_file() and path.name in (runs.CONFIG, runs.SPLITS, runs.TIMINGS,
                                            MLFLOW_RECORD):
            path.unlink()


@dataclass
class Stage:
    """One training stage's run: where it writes, its resolved config, device, precisions
    and data. ``fit`` reads ``run_dir``, ``device``, ``dtype``, ``seed``, ``resume`` and
    ``progress`` from it."""

    run_dir: Path
    config: TrainConfig
    device: torch.device
    eval_dtype: torch.dtype | None     # autocast dtype for inference
    data: RunData
    resume: bool = False
    quiet: bool = False
    scalars: Scalars = field(default_factory=lambda: Scalars("", enabled=False))
    started: float = field(default_factory=time.monotonic)  # a step's minutes count from here
    # The images the stage evaluated and the seconds they took: what its later evaluations
    # are forecast from.
    evaluated: list[float] = field(default_factory=lambda: [0, 0.0])

    @functools.cached_property
    def dtype(self) -> torch.dtype | None:
        """Autocast dtype for training (None = fp32); resolved when training starts, after
        the data and split are checked, since 'auto' may measure the model
        (models/precision.py)."""
        return training_precision(self.config, self.device)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def progress(self) -> bool:
        return not self.quiet

    def labeled_split(self) -> dict:
        """The split saved in the run, or a new seeded one (never re-drawn on resume)."""
        path = self.run_dir / runs.SPLITS
        if path.is_file():
            return load_split(path)
        c, pool, extra = self.config, len(self.data.train), self.data.extra_labeled
        split = make_split(self.data.train.labels[:pool - extra], c.labels_per_class,
                           c.val_per_class, c.seed, c.val_fraction)
        split["labeled"] = np.concatenate([split["labeled"], np.arange(pool - extra, pool)])
        save_split(path, split, seed=c.seed, labels_per_class=c.labels_per_class,
                   val_per_class=c.val_per_class, val_fraction=c.val_fraction,
                   extra_labeled=extra)
        return split

    def finish(self, model: torch.nn.Module, spec: InputSpec, facts: dict) -> dict:
        """Save the final model, test it once, write metrics.json (which marks the run done).
        Under torchrun rank 0 does this while the others wait."""
        if not distributed.is_main():
            distributed.barrier()
            return runs.read_json(self.run_dir / runs.METRICS)
        train = self.data.train
        save_model(self.run_dir, model, name=self.config.model, spec=spec,
                   classes=train.classes, stored=(train.channels, train.images.shape[-1]),
                   small_image=self.config.small_image,
                   model_options=self.config.model_options)
        metrics = {"model": self.config.model, **facts, **self.val_metrics(model, spec),
                   **self.test_metrics(model, spec)}
        runs.write_json(self.run_dir / runs.METRICS, metrics)
        self.scalars.add("test", {"top1": metrics["test_top1"], "ece": metrics.get("ece")},
                         self.config.epochs)
        self.scalars.close()
        distributed.barrier()
        return metrics

    def val_metrics(self, model: torch.nn.Module, spec: InputSpec) -> dict:
        """Top-1 on the split's validation images (none: {}), and which images it got
        right, on which a self-training run compares its iterations (keep.py)."""
        val = self.labeled_split()["val"]
        if not len(val):
            return {}
        images = self.data.train.subset(val)
        logits = self.predict(model, spec, images.images, images.labels)
        labels = images.labels.to(logits.device)
        correct = logits.argmax(1) == labels
        return {"val_top1": correct.float().mean().item(),
                "val_loss": torch.nn.functional.cross_entropy(logits.float(), labels).item(),
                "val_images": len(val),
                "val_correct": correct_string(correct.tolist())}  # to pair two steps

    def test_metrics(self, model: torch.nn.Module, spec: InputSpec) -> dict:
        test = self.data.test
        if test is None:
            return {"test_top1": None, "note": "no test data given (--test-data)"}
        logits = self.predict(model, spec, test.images, test.labels, progress=self.progress,
                              description="test")
        result = classification_metrics(logits, test.labels, test.classes)
        return {"test_top1": result["top1"], "per_class": result["per_class"],
                "ece": result["ece"], "test_confusion": nonzero_cells(result["confusion"])}


    def predict(self, model: torch.nn.Module, spec: InputSpec, images: torch.Tensor,
                labels: torch.Tensor, *, timed: bool = True, **options) -> torch.Tensor:
        """The model's logits on ``images``, their seconds counted in ``evaluated``."""
        start = time.monotonic()
        loader = ImageBatches(images, labels, self.config.eval_batch_size, self.device)
        logits = predict_logits(model, CleanPipeline(spec), loader, device=self.device,
                                dtype=self.eval_dtype, **options)
        if timed:
            self.evaluated[0] += len(labels)
            self.evaluated[1] += time.monotonic() - start
        return logits

    def seconds_after_training(self, task) -> float:
        """What the stage will spend once its training ends: its validation and test images
        at the rate its evaluations ran, and saving; what a step given minutes leaves for them
        (training/pace.py)."""
        test = self.data.test
        count = self.val_images + (len(test) if test is not None else 0)
        return SAVING_SECONDS + count * self.seconds_per_evaluated(task)

    def seconds_to_validate(self, task) -> float:
        """What validating once takes, at the rate the stage's evaluations ran."""
        return self.val_images * self.seconds_per_evaluated(task)

    @functools.cached_property
    def val_images(self) -> int:
        """The split's validation images, read once (the pace asks at every fit)."""
        return len(self.labeled_split()["val"])

    def seconds_per_evaluated(self, task) -> float:
        """Seconds an evaluated image takes: measured on the stage's evaluations, before any
        on one batch (timed after an untimed one, to warm up)."""
        if not self.evaluated[0]:
            test = self.data.test
            images = test if test is not None else self.data.train
            n = min(len(images), self.config.eval_batch_size)
            for timed in (False, True):
                self.predict(task.final_model(), task.spec, images.images[:n],
                             images.labels[:n], timed=timed)
        images, seconds = self.evaluated
        return seconds / max(images, 1)


def start_stage(config, out: str | Path, *, resume: bool = False, quiet: bool = False,
                config_cls: type = TrainConfig, data: RunData | None = None) -> Stage:
    """Open the run and load what it trains on (unless the caller already holds ``data``)."""
    started = time.monotonic()
    run_dir, config = open_run(config, out, resume, config_cls)
    distributed.barrier()  # rank 0 has written config.yaml before anyone reads the run
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    data = data or load_run_data(config, config.image_size)
    return Stage(run_dir=run_dir, config=config, device=device,
                 eval_dtype=resolve_precision(config.precision, device, training=False),
                 data=data, resume=resume, quiet=quiet, started=started,
                 scalars=Scalars(run_dir, config.tensorboard,
                                 open_mlflow(run_dir, config.mlflow, config.mlflow_uri,
                                             to_dict(config))))


def share_split(teacher: str | Path, student: str | Path) -> None:
    """A student uses its teacher's labeled split: the same labels, the same unlabeled pool."""
    source, target = Path(teacher) / runs.SPLITS, Path(student) / runs.SPLITS
    if source.is_file() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


# Images a data-dependent initialisation (airbench's whitening stem) looks at, at most.
INIT_IMAGES = 10_000


def build_model(config: TrainConfig, num_classes: int, device: torch.device,
                images: torch.Tensor | None = None) -> tuple[torch.nn.Module, InputSpec]:
    """The timm model a config asks for, set up for fine-tuning, on the device; and the input
    it expects (the config's resolution, the weights' normalisation). A model trained from
    scratch that initialises from data (``models.build.init_from_images``) looks at
    ``images``, the stage's uint8 training images."""
    model = create_model(config.model, num_classes, pretrained=config.pretrained,
                         drop_rate=config.drop_rate, drop_path_rate=config.drop_path_rate,
                         in_chans=config.in_chans, options=config.model_options)
    keep_spatial_map(model, config.small_image)
    configure_finetune(model, config.finetune, config.freeze_stages)
    info = model_input_config(model)
    spec = InputSpec(config.image_size, info["mean"], info["std"], info["channels"])
    if config.pretrained == "none" and images is not None and len(images):
        init_from_images(model, to_model_input(torch.as_tensor(images[:INIT_IMAGES]), spec))
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format), spec
