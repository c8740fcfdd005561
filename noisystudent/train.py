"""``noisystudent train``: supervised transfer learning on a few labels, in one run directory."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.utils import ModelEmaV3

from . import distributed, runs
from .config import TrainConfig, build, to_dict
from .data.imageset import ImageSet
from .data.sources import load_train_and_test
from .data.splits import load_split, make_split, save_split
from .engine import (
    InMemoryLoader,
    cosine_with_warmup,
    fit,
    make_optimizer,
    predict_logits,
    resolve_device,
    resolve_precision,
)
from .errors import UserError
from .metrics import classification_metrics
from .models import configure_finetune, create_model, model_input_config, param_groups
from .tasks import SupervisedTask
from .transforms import CleanPipeline, InputSpec, train_pipeline


def open_run(config, out: str | Path, resume: bool, config_cls=TrainConfig):
    """Create the run directory, or reopen it for --resume with the config it was started with."""
    run_dir = Path(out)
    saved = run_dir / runs.CONFIG
    if resume:
        if not saved.is_file():
            raise UserError(f"nothing to resume in {run_dir}: it has no {runs.CONFIG}")
        runs.remove_stale_temporaries(run_dir)
        return run_dir, build(config_cls, runs.read_yaml(saved))
    if (run_dir / runs.CHECKPOINT).exists() or (run_dir / runs.METRICS).exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_yaml(saved, to_dict(config))
    return run_dir, config


def labeled_split(run_dir: Path, labels: torch.Tensor, config) -> dict:
    """The split saved in the run, or a new seeded one (never re-drawn on resume)."""
    path = run_dir / runs.SPLITS
    if path.is_file():
        return load_split(path)
    split = make_split(labels, config.labels_per_class, config.val_per_class, config.seed)
    save_split(path, split, seed=config.seed, labels_per_class=config.labels_per_class,
               val_per_class=config.val_per_class)
    return split


def share_split(teacher: Path, student: Path) -> None:
    """A student uses its teacher's labeled split: the same labels, the same unlabeled pool."""
    source, target = Path(teacher) / runs.SPLITS, Path(student) / runs.SPLITS
    if source.is_file() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def build_student(config, num_classes: int, device: torch.device) -> tuple[torch.nn.Module,
                                                                           InputSpec]:
    model = create_model(config.model, num_classes, pretrained=config.pretrained,
                         drop_rate=config.drop_rate, drop_path_rate=config.drop_path_rate)
    configure_finetune(model, config.finetune, config.freeze_stages)
    info = model_input_config(model)
    spec = InputSpec(config.image_size, tuple(info["mean"]), tuple(info["std"]))
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format), spec


def optimization(model: torch.nn.Module, config, steps_per_epoch: int):
    """Optimizer, per-step cosine schedule with warmup, and the optional weight EMA."""
    layer_decay = config.layer_decay if config.layer_decay < 1.0 else None
    groups = param_groups(model, config.lr, config.weight_decay, layer_decay)
    optimizer = make_optimizer(config.optimizer, groups, config.lr, config.momentum)
    total = config.epochs * steps_per_epoch
    scheduler = cosine_with_warmup(optimizer, total, round(config.warmup_epochs * steps_per_epoch))
    # Warmup (decay 1 - (1 + step)^(-2/3), capped at ema_decay): without it, a short run's
    # average keeps a large share of the initial weights (0.998^600 = 30% after 600 steps).
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True) \
        if config.ema_decay > 0 else None
    return optimizer, scheduler, ema


def save_model(run_dir: Path, model: torch.nn.Module, config, spec: InputSpec,
               classes: list[str], stored: tuple[int, int]) -> None:
    """The final weights plus what evaluate/predict/teachers need to rebuild the model."""
    runs.save_weights(run_dir / runs.MODEL, model.state_dict())
    runs.write_json(run_dir / runs.MODEL_INFO, {
        "model": config.model, "num_classes": len(classes), "classes": classes,
        "input": spec.to_dict(), "stored_channels": stored[0], "stored_size": stored[1],
    })


def test_metrics(model, spec, test_set, config, device, dtype, progress) -> dict:
    if test_set is None:
        return {"test_top1": None, "note": "no test data given (--test-data)"}
    loader = InMemoryLoader(test_set.images, test_set.labels, config.eval_batch_size, device)
    logits = predict_logits(model, CleanPipeline(spec), loader, device, dtype, progress, "test")
    result = classification_metrics(logits, test_set.labels, test_set.classes)
    return {"test_top1": result["top1"], "per_class": result["per_class"], "ece": result["ece"]}


@dataclass
class Run:
    """What every training command starts from: the run directory, the resolved config, the
    device and precisions, and the data."""

    run_dir: Path
    config: TrainConfig
    device: torch.device
    dtype: torch.dtype | None          # autocast dtype for training (None = fp32)
    eval_dtype: torch.dtype | None     # autocast dtype for inference
    train_set: ImageSet
    test_set: ImageSet | None

    def finish(self, model: torch.nn.Module, spec: InputSpec, quiet: bool, facts: dict) -> dict:
        """Save the final model, test it once, write metrics.json (which marks the run done).
        Under torchrun rank 0 does this while the others wait."""
        if not distributed.is_main():
            distributed.barrier()
            return runs.read_json(self.run_dir / runs.METRICS)
        save_model(self.run_dir, model, self.config, spec, self.train_set.classes,
                   (self.train_set.channels, self.train_set.images.shape[-1]))
        metrics = {"model": self.config.model, **facts,
                   **test_metrics(model, spec, self.test_set, self.config, self.device,
                                  self.eval_dtype, not quiet)}
        runs.write_json(self.run_dir / runs.METRICS, metrics)
        distributed.barrier()
        return metrics


def start_run(config, out: str | Path, resume: bool, config_cls=TrainConfig) -> Run:
    run_dir, config = open_run(config, out, resume, config_cls)
    distributed.barrier()  # rank 0 has written config.yaml before anyone reads the run
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    train_set, test_set = load_train_and_test(config.data, config.image_size, config.channels,
                                              config.strict, config.data_dir, config.test_data)
    return Run(run_dir, config, device, resolve_precision(config.precision, device, True),
               resolve_precision(config.precision, device, False), train_set, test_set)


def train(config: TrainConfig, out: str | Path, resume: bool = False,
          quiet: bool = False) -> dict:
    """Fine-tune ``config.model`` on the labeled split; returns metrics.json's content."""
    run = start_run(config, out, resume)
    run_dir, config, device, dtype, eval_dtype = (run.run_dir, run.config, run.device, run.dtype,
                                                  run.eval_dtype)
    train_set = run.train_set
    split = labeled_split(run_dir, train_set.labels, config)
    labeled = train_set.subset(split["labeled"])
    model, spec = build_student(config, len(train_set.classes), device)

    loader = InMemoryLoader(labeled.images, labeled.labels, config.batch_size, device,
                            shuffle=True, drop_last=True, seed=config.seed,
                            steps=config.steps_per_epoch)
    optimizer, scheduler, ema = optimization(model, config, len(loader))
    task = SupervisedTask(model, train_pipeline(config, spec), config.label_smoothing)
    val_loader = None
    if len(split["val"]):
        val = train_set.subset(split["val"])
        val_loader = InMemoryLoader(val.images, val.labels, config.eval_batch_size, device)

    def validate(epoch: int) -> dict:
        if val_loader is None:
            return {}
        logits = predict_logits(ema.module if ema else model, CleanPipeline(spec), val_loader,
                                device, eval_dtype)
        return {"val_top1": (logits.argmax(1) == val_loader.labels).float().mean().item()}

    fit(task, optimizer, scheduler, loader, config.epochs, run_dir, device, dtype, config.seed,
        ema, resume, not quiet, validate)
    final = ema.module if ema is not None else model
    return run.finish(final, spec, quiet, {"pretrained": config.pretrained,
                                           "labeled_images": len(labeled),
                                           "epochs": config.epochs,
                                           "steps": config.epochs * len(loader)})
