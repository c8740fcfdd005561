"""Losses of knowledge distillation and self-training, each a small pure function or module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher soft labels || student soft predictions), both softened by T, times T².

    T² keeps the gradient scale independent of T (Hinton et al. 2015); same formula as
    timm's logit distillation.
    """
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1),
                    F.log_softmax(teacher_logits.float() / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t


def soft_target_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with stored soft labels: -sum(p * log q), averaged over the batch."""
    return -(target_probs * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's pre-logits features: forward_features, then the head's pooling only."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def pooled_width(model: nn.Module) -> int:
    """Width of pooled_features: timm's pre-logits size (as timm's feature distillation)."""
    return getattr(model, "head_hidden_size", None) or model.num_features
