"""Backbones built for small images, registered in timm's model registry so that every command
takes them by name (``--model cifar_resnet20``) and every timm interface works on them
(``create_model``, ``forward_features``, ``forward_head``, ``reset_classifier``,
``group_matcher``, ``drop_rate``, ``drop_path_rate``, ``in_chans``).

An ImageNet network at 28-32 px ends on a 1x1 map after five stride-2 stages; these keep a
3x3 stride-1 stem and downsample only twice, so a 32 px input ends on 8x8:

- CIFAR ResNets (He et al. 2016, section 4.2): 6n+2 layers, basic blocks at 16/32/64 channels,
  post-activation, parameter-free shortcuts (option A: subsample, zero-pad the channels).
  ResNet-20 0.27 M parameters, ResNet-32 0.46 M, ResNet-56 0.85 M.
- Wide ResNets (Zagoruyko & Komodakis 2016): WRN-d-k, (d-4)/6 pre-activation blocks per stage
  at 16k/32k/64k channels, 1x1 projection shortcuts where the shape changes.
  WRN-28-2 1.5 M, WRN-16-4 2.7 M, WRN-28-10 36.5 M.

No ImageNet weights exist for them: they train from scratch (``--pretrained none``).
Stochastic depth (``drop_path_rate``) grows linearly from 0 at the first block to the rate at
the last, as timm's ResNets do; ``drop_rate`` is dropout before the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["MODELS", "CifarResNet", "WideResNet"]


def small_image_cfg(**kwargs) -> dict:
    """timm's pretrained_cfg of a small-image model trained from scratch (these families and
    airbench's): 32 px input, stem ``conv_stem``, head ``fc``."""
    # Inputs scaled to [-1, 1]: no dataset's statistics are baked into a from-scratch model.
    return {"num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8),
            "crop_pct": 1.0, "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5), "first_conv": "conv_stem", "classifier": "fc", **kwargs}


class _Head(nn.Module):
    """What both families share after the last stage: pooling, dropout, the classifier."""

    num_classes: int
    num_features: int

    def _init_head(self, num_classes: int, drop_rate: float) -> None:
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.head_hidden_size = self.num_features
        self.global_pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        # Stem, then one group per stage (per block when fine), then the head.
        blocks = r"^stage(\d+)" if coarse else r"^stage(\d+)\.(\d+)"
        return {"stem": r"^conv_stem|^bn_stem",
                "blocks": [(blocks, None), (r"^bn_final", (99999,))]}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError("gradient checkpointing is not needed at this size")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _stages(block: type, in_chs: int, widths: tuple[int, ...], blocks_per_stage: int,
            drop_path_rate: float) -> list[nn.Sequential]:
    """One stage per width, ``blocks_per_stage`` blocks each; every stage after the first
    halves the map in its first block. Stochastic depth grows linearly over all blocks, from 0
    at the first to ``drop_path_rate`` at the last."""
    total = len(widths) * blocks_per_stage
    rates = iter(drop_path_rate * i / max(1, total - 1) for i in range(total))
    stages = []
    for index, width in enumerate(widths):
        blocks = []
        for b in range(blocks_per_stage):
            stride = 2 if index > 0 and b == 0 else 1
            blocks.append(block(in_chs, width, stride, next(rates)))
            in_chs = width
        stages.append(nn.Sequential(*blocks))
    return stages


class _ZeroPadShortcut(nn.Module):
    """He et al.'s option A: subsample by the stride, zero-pad the new channels; no weights."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU (the CIFAR ResNet block)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_path: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        change = stride != 1 or in_chs != out_chs
        self.shortcut = _ZeroPadShortcut(stride, out_chs - in_chs) if change else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(self.drop_path(out) + self.shortcut(x), inplace=True)


class CifarResNet(_Head):
    """ResNet-(6n+2) for 32 px images: stem 3x3 at ``widths[0]``, three stages of ``n`` basic
    blocks (the second and third halve the map)."""

    def __init__(self, blocks_per_stage: int, widths: tuple[int, int, int] = (16, 32, 64), *,
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        self.num_features = widths[-1]
        self.conv_stem = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn_stem = nn.BatchNorm2d(widths[0])
        self.stage1, self.stage2, self.stage3 = _stages(BasicBlock, widths[0], widths,
                                                        blocks_per_stage, drop_path_rate)
        self.feature_info = [dict(num_chs=w, reduction=r, module=f"stage{i + 1}")
                             for i, (w, r) in enumerate(zip(widths, (1, 2, 4)))]
        self._init_head(num_classes, drop_rate)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_stem(self.conv_stem(x)), inplace=True)
        return self.stage3(self.stage2(self.stage1(x)))


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus the shortcut (the Wide ResNet block; its dropout between
    the convolutions is left out, as in most WRN students: dropout here is the head's)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_path: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        change = stride != 1 or in_chs != out_chs
        self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False) if change else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # A projected shortcut starts from the pre-activation, as in the authors' code.
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        return self.drop_path(out) + shortcut


class WideResNet(_Head):
    """WRN-depth-widen: stem 3x3 at 16, three stages of (depth-4)/6 pre-activation blocks at
    16k/32k/64k channels, a final BN-ReLU."""

    def __init__(self, depth: int, widen: int, *, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.num_features = widths[-1]
        self.conv_stem = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.stage1, self.stage2, self.stage3 = _stages(PreActBlock, 16, widths, n,
                                                        drop_path_rate)
        self.bn_final = nn.BatchNorm2d(widths[-1])
        self.feature_info = [dict(num_chs=w, reduction=r, module=f"stage{i + 1}")
                             for i, (w, r) in enumerate(zip(widths, (1, 2, 4)))]
        self._init_head(num_classes, drop_rate)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.conv_stem(x))))
        return F.relu(self.bn_final(x), inplace=True)


MODELS = ("cifar_resnet20", "cifar_resnet32", "cifar_resnet56",
          "cifar_wrn28_2", "cifar_wrn16_4", "cifar_wrn28_10")
default_cfgs = generate_default_cfgs({name: small_image_cfg() for name in MODELS})


def create(cls: type, name: str, pretrained: bool, **kwargs) -> nn.Module:
    """Model ``name`` of class ``cls`` through timm (its registered pretrained_cfg)."""
    return build_model_with_cfg(cls, name, pretrained, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 of He et al. 2016 for 32 px images, 0.27 M parameters."""
    return create(CifarResNet, "cifar_resnet20", pretrained, blocks_per_stage=3, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-32 of He et al. 2016 for 32 px images, 0.46 M parameters."""
    return create(CifarResNet, "cifar_resnet32", pretrained, blocks_per_stage=5, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-56 of He et al. 2016 for 32 px images, 0.85 M parameters."""
    return create(CifarResNet, "cifar_resnet56", pretrained, blocks_per_stage=9, **kwargs)


@register_model
def cifar_wrn28_2(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-2 of Zagoruyko & Komodakis 2016, 1.5 M parameters."""
    return create(WideResNet, "cifar_wrn28_2", pretrained, depth=28, widen=2, **kwargs)


@register_model
def cifar_wrn16_4(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-16-4 of Zagoruyko & Komodakis 2016, 2.7 M parameters."""
    return create(WideResNet, "cifar_wrn16_4", pretrained, depth=16, widen=4, **kwargs)


@register_model
def cifar_wrn28_10(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-10 of Zagoruyko & Komodakis 2016, 36.5 M parameters."""
    return create(WideResNet, "cifar_wrn28_10", pretrained, depth=28, widen=10, **kwargs)
