"""Tasks in timm's shape (``timm.task.TrainingTask``): an ``nn.Module`` that owns its trainable
module, sets up its weight EMA and its DDP wrapping, and turns a batch into
``{"loss": ..., "logits": ..., <named parts>}``. The loop never asks which method it runs.

Every trainable op runs inside ``trainable_module``'s forward (for feature distillation the
student *and* its projection), which is what DDP needs to synchronise every gradient.
Each task sees its batch through the same input pipeline: a uint8 ``augment`` (the noise),
then the model's resize and normalisation (``spec``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.task import TrainingTask
from timm.task.distillation import FeatureDistillationTrainableModule
from timm.utils import unwrap_model
from torch import nn

from noisystudent.core import distributed
from noisystudent.core.device import autocast
from noisystudent.models.transforms import InputSpec, at_most, to_model_input

from .losses import kd_loss, pooled_features, pooled_width, soft_target_ce

Augment = Callable[[torch.Tensor], torch.Tensor]


class Task(TrainingTask):
    """What every task here shares (supervised, distillation, Noisy Student): the trainable
    module, its noised input, DDP, the model that is evaluated and saved."""

    def __init__(self, trainable: nn.Module, augment: Augment, spec: InputSpec,
                 device: torch.device | None = None):
        super().__init__(device=device, verbose=False)
        self.trainable_module = trainable
        self.augment, self.spec = augment, spec

    def noised_input(self, images: torch.Tensor) -> torch.Tensor:
        return to_model_input(self.augment(at_most(images, self.spec.size)), self.spec)

    def compile(self, backend: str = "inductor", mode: str | None = None, **kwargs) -> None:
        """torch.compile the trainable module (before DDP wraps it, as timm does)."""
        self.trainable_module = torch.compile(self.trainable_module, backend=backend, mode=mode,
                                              **kwargs)

    def prepare_distributed(self, device_ids: list | None = None, **ddp_kwargs) -> Task:
        self.trainable_module = distributed.wrap(self.trainable_module, self.device)
        return self

    def trained_module(self) -> nn.Module:
        """The trainable module without DDP: what the optimizer and checkpoints hold."""
        return unwrap_model(self.trainable_module)

    def final_model(self) -> nn.Module:
        """The model to evaluate and deploy: the EMA weights when kept, no training aids."""
        ema = self.get_trainable_module(ema=True)
        return ema.module if ema is not None else self.trained_module()


class SupervisedTask(Task):
    """Cross-entropy with the true labels on the augmented view."""

    def __init__(self, model: nn.Module, augment: Augment, spec: InputSpec, *,
                 label_smoothing: float = 0.0, device: torch.device | None = None):
        super().__init__(model, augment, spec, device)
        self.label_smoothing = label_smoothing

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.trainable_module(self.noised_input(batch["images"]))
        loss = F.cross_entropy(logits.float(), batch["labels"],
                               label_smoothing=self.label_smoothing)
        return {"loss": loss, "logits": logits, "ce": loss.detach()}


class NoisyStudentTask(Task):
    """CE on the labeled batch + unlabeled_weight x soft CE on the pseudo-labeled batch, both
    through the noised pipeline in one forward pass (shared batch-norm statistics, as in the
    official implementation). Dropout and stochastic depth live in the model.

    With ``consistency_weight`` > 0 (FixMatch's weak-to-strong consistency, beside the
    teacher's labels): the student also looks at a weakly noised view of each pseudo-labeled
    image (``weak_augment``, without gradient), and where its own prediction there is at
    least ``consistency_threshold`` confident, that class is a hard target for its noised
    view, weighted ``consistency_weight``. It costs one more forward pass of the
    pseudo-labeled batch."""

    def __init__(self, model: nn.Module, augment: Augment, spec: InputSpec, *,
                 unlabeled_weight: float = 1.0, label_smoothing: float = 0.0,
                 consistency_weight: float = 0.0, consistency_threshold: float = 0.95,
                 weak_augment: Augment | None = None, device: torch.device | None = None):
        super().__init__(model, augment, spec, device)
        self.unlabeled_weight, self.label_smoothing = unlabeled_weight, label_smoothing
        self.consistency_weight = consistency_weight
        self.consistency_threshold = consistency_threshold
        self.weak_augment = weak_augment

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        n = len(batch["images"])
        # At the model's size first: the two sides may be stored at different sizes.
        labeled, pseudo_images = (at_most(batch[key], self.spec.size)
                                  for key in ("images", "pseudo_images"))
        images = torch.cat([labeled, pseudo_images])
        logits = self.trainable_module(self.noised_input(images))
        ce = F.cross_entropy(logits[:n].float(), batch["labels"],
                             label_smoothing=self.label_smoothing)
        pseudo = soft_target_ce(logits[n:], batch["pseudo_probs"])
        loss = ce + self.unlabeled_weight * pseudo
        out = {"ce": ce.detach(), "pseudo": pseudo.detach()}
        if self.consistency_weight > 0:
            consistency, confident = self._consistency(pseudo_images, logits[n:])
            loss = loss + self.consistency_weight * consistency
            out.update(consistency=consistency.detach(), confident=confident)
        return {"loss": loss, "logits": logits, **out}

    def _consistency(self, images: torch.Tensor, noised_logits: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the masked CE of the noised view against the weak view's confident class, the
        share of images confident enough), as FixMatch: a mean over every image."""
        weak = self.weak_augment(images) if self.weak_augment is not None else images
        with torch.no_grad():
            probs = self.trainable_module(to_model_input(weak, self.spec)).float().softmax(1)
        confidence, target = probs.max(1)
        mask = (confidence >= self.consistency_threshold).float()
        per_image = F.cross_entropy(noised_logits.float(), target, reduction="none")
        return (per_image * mask).mean(), mask.mean()


class DistillTask(Task):
    """Student mimics a frozen teacher: kd_weight x KD(T) + ce_weight x CE(true labels)
    [+ feature_weight x MSE(projected student features, teacher features)].

    Consistent teaching (Beyer et al. 2022): the teacher sees the *same* augmented view as the
    student, each through its own resolution and normalisation. Images whose label is -1
    (unlabeled) contribute only to the distillation terms. With feature_weight > 0 the
    trainable module is timm's student + projection pair, so the projection trains, is
    checkpointed and is synchronised under DDP with the student; it is not deployed.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, augment: Augment,
                 spec: InputSpec, *, teacher_spec: InputSpec, temperature: float = 1.0,
                 kd_weight: float = 1.0, ce_weight: float = 1.0, feature_weight: float = 0.0,
                 consistent: bool = True, teacher_dtype: torch.dtype | None = None,
                 label_smoothing: float = 0.0, device: torch.device | None = None):
        if feature_weight > 0:
            widths = pooled_width(student), pooled_width(teacher)
            projection = nn.Linear(*widths, bias=False) if widths[0] != widths[1] else None
            student = FeatureDistillationTrainableModule(student, projection)
            if device is not None:
                student.to(device)
        super().__init__(student, augment, spec, device)
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_spec, self.teacher_dtype = teacher_spec, teacher_dtype
        self.temperature, self.label_smoothing = temperature, label_smoothing
        self.kd_weight, self.ce_weight, self.feature_weight = kd_weight, ce_weight, feature_weight
        self.consistent = consistent

    def train(self, mode: bool = True) -> DistillTask:
        super().train(mode)
        self.teacher.eval()  # the teacher never trains: no dropout, batch norm in inference
        return self

    def final_model(self) -> nn.Module:
        model = super().final_model()
        return model.student if isinstance(model, FeatureDistillationTrainableModule) else model

    @torch.no_grad()
    def _teach(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_model_input(images, self.teacher_spec)
        with autocast(x.device, self.teacher_dtype):
            features = pooled_features(self.teacher, x)
            logits = self.teacher.get_classifier()(features)
        return logits.float(), features.float()

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        view = self.augment(batch["images"])
        teacher_logits, teacher_features = self._teach(view if self.consistent
                                                       else batch["images"])
        x = to_model_input(view, self.spec)
        if self.feature_weight > 0:
            logits, student_features = self.trainable_module(x)
        else:
            logits = self.trainable_module(x)
        kd = kd_loss(logits, teacher_logits, self.temperature)
        out = {"kd": kd.detach()}
        loss = self.kd_weight * kd
        if self.ce_weight > 0:
            # Mean over the labeled images (label -1 is ignored), 0 when there are none;
            # without selecting them, which would make the host wait for the device.
            labels = batch["labels"]
            per_image = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none",
                                        label_smoothing=self.label_smoothing)
            labeled = (labels >= 0).float()
            ce = (per_image * labeled).sum() / labeled.sum().clamp(min=1)
            loss = loss + self.ce_weight * ce
            out["ce"] = ce.detach()
        if self.feature_weight > 0:
            feature = F.mse_loss(student_features.float(), teacher_features)
            loss = loss + self.feature_weight * feature
            out["feature"] = feature.detach()
        return {"loss": loss, "logits": logits, **out}
