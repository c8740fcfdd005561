"""Optimizer, its parameter groups and learning-rate schedule of every training stage."""

from __future__ import annotations

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from noisystudent.core.errors import UserError

from .pace import CosineWithWarmup


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 layer_decay: float | None = None) -> list[dict]:
    """Optimizer groups of the trainable parameters, without weight decay on 1-D ones (biases,
    norms). With layer_decay, timm's layer-wise LR decay (group_matcher blocks): each group has
    lr = lr * lr_scale and keeps "lr_scale" so a scheduler can rescale it."""
    if layer_decay is None:
        groups = param_groups_weight_decay(model, weight_decay)
        for group in groups:
            group["lr_scale"] = 1.0
    else:
        if not 0.0 < layer_decay <= 1.0:
            raise UserError(f"layer_decay must be in (0, 1], got {layer_decay}")
        groups = param_groups_layer_decay(model, weight_decay=weight_decay,
                                          layer_decay=layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return groups


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def scale_norm_biases(module: nn.Module, groups: list[dict], scale: float) -> list[dict]:
    """The same groups with each normalisation layer's shift (bias) moved to a group of its own
    at ``scale`` times the lr (airbench trains its batch-norm shifts at 64x)."""
    if scale == 1.0:
        return groups
    shifts = {id(m.bias) for m in module.modules()
              if isinstance(m, _NORMS) and getattr(m, "bias", None) is not None}
    split = []
    for group in groups:
        for is_shift in (False, True):
            params = [p for p in group["params"] if (id(p) in shifts) == is_shift]
            if params:
                factor = scale if is_shift else 1.0
                split.append({**group, "params": params, "lr": group["lr"] * factor,
                              "lr_scale": group["lr_scale"] * factor})
    return split


def make_optimizer(name: str, groups: list[dict], lr: float,
                   momentum: float) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD, fused where PyTorch has the kernel (CUDA, CPU): one kernel for
    all parameters, and an update that a non-finite loss can cancel on the device
    (``optimizer.found_inf``) without the host waiting for the GPU."""
    if name == "sgd":
        kind, kwargs = torch.optim.SGD, dict(momentum=momentum, nesterov=True)
    else:
        kind, kwargs = torch.optim.AdamW, {}
    try:
        return kind(groups, lr=lr, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # e.g. parameters on a device without fused kernels
        return kind(groups, lr=lr, **kwargs)


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.found_inf`` cancels an update on the device (fused kernels)."""
    # Per group: a checkpoint from before fused kernels restores groups without them.
    return all(group.get("fused") for group in optimizer.param_groups)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int,
                       warmup_steps: int, segments=()) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then cosine to zero, stepped per batch (its factor, ``lr_lambdas[0]``, a
    CosineWithWarmup whose total a Pace can fit). LambdaLR scales each group's own initial
    lr, so layer-wise lr scales survive."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, CosineWithWarmup(total_steps, warmup_steps, segments))


def build_optimizer(module: torch.nn.Module, settings, steps_per_epoch: int):
    """AdamW or SGD over ``module``'s trainable parameters (layer-wise lr decay when asked),
    and the per-step cosine schedule with warmup over ``settings.steps`` (or its epochs).
    ``settings`` is a LoopSettings."""
    layer_decay = settings.layer_decay if settings.layer_decay < 1.0 else None
    groups = param_groups(module, settings.lr, settings.weight_decay, layer_decay)
    groups = scale_norm_biases(module, groups, settings.norm_bias_lr_scale)
    optimizer = make_optimizer(settings.optimizer, groups, settings.lr, settings.momentum)
    total = settings.steps or settings.epochs * steps_per_epoch
    warmup = min(total, round(settings.warmup_epochs * steps_per_epoch))
    return optimizer, cosine_with_warmup(optimizer, total, warmup, settings.decay_segments)
