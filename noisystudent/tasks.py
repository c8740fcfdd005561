"""Tasks: each turns a batch into ``{"loss": ..., "logits": ..., <named parts>}`` for the loop."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .engine import autocast
from .losses import FeatureDistillLoss, kd_loss, pooled_features, soft_target_ce
from .transforms import InputSpec, to_model_input


class SupervisedTask:
    """Cross-entropy with the true labels on the augmented view."""

    def __init__(self, model: torch.nn.Module, pipeline: Callable[[torch.Tensor], torch.Tensor],
                 label_smoothing: float = 0.0):
        self.model = model
        self.pipeline = pipeline
        self.label_smoothing = label_smoothing

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.model(self.pipeline(batch["images"]))
        loss = F.cross_entropy(logits.float(), batch["labels"],
                               label_smoothing=self.label_smoothing)
        return {"loss": loss, "logits": logits, "ce": loss.detach()}


class DistillTask:
    """Student mimics a frozen teacher: kd_weight x KD(T) + ce_weight x CE(true labels)
    [+ feature_weight x feature MSE].

    Consistent teaching (Beyer et al. 2022): the teacher sees the *same* augmented view as the
    student, each through its own resolution and normalisation. Images whose label is -1
    (unlabeled) contribute only to the distillation terms.
    """

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module,
                 augment: Callable[[torch.Tensor], torch.Tensor], student_spec: InputSpec,
                 teacher_spec: InputSpec, temperature: float = 1.0, kd_weight: float = 1.0,
                 ce_weight: float = 1.0, feature_weight: float = 0.0,
                 feature_loss: FeatureDistillLoss | None = None, consistent: bool = True,
                 teacher_dtype: torch.dtype | None = None, label_smoothing: float = 0.0):
        self.model, self.teacher = student, teacher.eval().requires_grad_(False)
        self.augment, self.consistent = augment, consistent
        self.student_spec, self.teacher_spec = student_spec, teacher_spec
        self.temperature, self.label_smoothing = temperature, label_smoothing
        self.kd_weight, self.ce_weight, self.feature_weight = kd_weight, ce_weight, feature_weight
        self.feature_loss, self.teacher_dtype = feature_loss, teacher_dtype

    @torch.no_grad()
    def _teach(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_model_input(images, self.teacher_spec)
        with autocast(x.device, self.teacher_dtype):
            features = pooled_features(self.teacher, x)
            logits = self.teacher.get_classifier()(features)
        return logits.float(), features.float()

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        view = self.augment(batch["images"])
        teacher_logits, teacher_features = self._teach(view if self.consistent
                                                       else batch["images"])
        x = to_model_input(view, self.student_spec)
        if self.feature_weight > 0:
            student_features = pooled_features(self.model, x)
            logits = self.model.get_classifier()(student_features)
        else:  # the model's own forward (same ops): what DDP needs to sync gradients
            logits = self.model(x)
        kd = kd_loss(logits, teacher_logits, self.temperature)
        out = {"kd": kd.detach()}
        loss = self.kd_weight * kd
        labeled = batch["labels"] >= 0
        if self.ce_weight > 0 and labeled.any():
            ce = F.cross_entropy(logits[labeled].float(), batch["labels"][labeled],
                                 label_smoothing=self.label_smoothing)
            loss = loss + self.ce_weight * ce
            out["ce"] = ce.detach()
        if self.feature_weight > 0:
            feature = self.feature_loss(student_features, teacher_features)
            loss = loss + self.feature_weight * feature
            out["feature"] = feature.detach()
        return {"loss": loss, "logits": logits, **out}


class NoisyStudentTask:
    """CE on the labeled batch + unlabeled_weight x soft CE on the pseudo-labeled batch, both
    through the noised pipeline in one forward pass (shared batch-norm statistics, as in the
    official implementation). Dropout and stochastic depth live in the model."""

    def __init__(self, model: torch.nn.Module, augment: Callable[[torch.Tensor], torch.Tensor],
                 spec: InputSpec, unlabeled_weight: float = 1.0, label_smoothing: float = 0.0):
        self.model, self.augment, self.spec = model, augment, spec
        self.unlabeled_weight, self.label_smoothing = unlabeled_weight, label_smoothing

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        n = len(batch["images"])
        images = torch.cat([batch["images"], batch["pseudo_images"]])
        logits = self.model(to_model_input(self.augment(images), self.spec))
        ce = F.cross_entropy(logits[:n].float(), batch["labels"],
                             label_smoothing=self.label_smoothing)
        pseudo = soft_target_ce(logits[n:], batch["pseudo_probs"])
        loss = ce + self.unlabeled_weight * pseudo
        return {"loss": loss, "logits": logits, "ce": ce.detach(), "pseudo": pseudo.detach()}
