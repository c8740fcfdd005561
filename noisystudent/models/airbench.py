"""Small-image networks that learn fast per step and per CPU-minute: the shape of Keller
Jordan's airbench (github.com/KellerJordan/cifar10-airbench: 94% on CIFAR-10 in under 10
epochs), in timm's registry beside the CIFAR ResNets (``small_models.py``), with its training
tricks as constructor options so each can be switched off and measured.

The network: a 2x2 patch convolution (no padding, 24 channels), three groups of
conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU, a global max-pool, a bias-free linear
head scaled by 1/9. Wide dense 3x3 convolutions on maps of 13x13 and smaller keep a CPU's
matrix units busy where a 16-channel ResNet-20 does not.

- ``cifar_airbench_s``: 32/128/128, 0.5 M parameters (the fastest per CPU-minute);
- ``cifar_airbench``: airbench94's 64/256/256, 2.0 M;
- ``cifar_airbench_l``: airbench96's shape, 128/384/512 and a third convolution per group
  with a residual around the last two (the only member where stochastic depth has meaning).

Options (keyword arguments of ``create_model``; the run config's ``model_options``):

- ``whiten_stem``: the 2x2 stem is frozen and set from the training images' patches by
  ``init_stem_from_images`` (airbench's whitening: the patch covariance's eigenvectors scaled
  by 1/sqrt(eigenvalue), each with its negative); the training stages call it before the
  first step. With 1 input channel the 8 whitening filters are followed by random mixtures
  of them, to the stem's 24 channels.
- ``dirac_init``: each 3x3 convolution starts as the identity on its first input channels.
- ``bn_weight``: whether batch-norm scales train (airbench: no, only the shifts);
  ``bn_momentum``: their running-statistics momentum in PyTorch's convention (airbench 0.4).
- ``flip_tta``: in eval mode the logits are the mean over the image and its mirror; this is
  part of ``forward``, so evaluation, pseudo-labels and the exported ONNX graph all hold it.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model
from torch import nn

from .small_models import create, small_image_cfg

__all__ = ["MODELS", "AirbenchNet"]

STEM_WIDTH, STEM_KERNEL = 24, 2
# The whitening's regulariser (airbench: eps added to the eigenvalues of the patch covariance).
WHITEN_EPS = 5e-4
# airbench divides its logits by 9: a smaller head output early on, the same optimum.
LOGIT_SCALE = 1 / 9


class _Group(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU; with ``residual`` a third
    conv -> BN, added to the first activation before the last GELU (airbench96)."""

    def __init__(self, in_chs: int, out_chs: int, norm: callable, residual: bool = False,
                 drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False)
        self.norm1 = norm(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.norm2 = norm(out_chs)
        self.residual = residual
        if residual:
            self.conv3 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
            self.norm3 = norm(out_chs)
            self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        out = F.gelu(self.norm2(self.conv2(x)))
        if not self.residual:
            return out
        return F.gelu(x + self.drop_path(self.norm3(self.conv3(out))))


class AirbenchNet(nn.Module):
    """The airbench network for ``in_chans`` x 28-32 px images (module docstring)."""

    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), residual: bool = False,
                 *, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = "max",
                 whiten_stem: bool = True, dirac_init: bool = True, bn_weight: bool = False,
                 bn_momentum: float = 0.4, flip_tta: bool = False):
        super().__init__()
        if drop_path_rate and not residual:
            warnings.warn("drop_path_rate has no effect on this model: its groups have no "
                          "residual branch to drop (dropout, drop_rate, still applies)",
                          stacklevel=3)
            drop_path_rate = 0.0
        if global_pool not in ("max", "avg"):
            raise ValueError(f"global_pool must be 'max' or 'avg', got {global_pool!r}")
        self.num_classes, self.drop_rate, self.global_pool = num_classes, drop_rate, global_pool
        self.num_features = self.head_hidden_size = widths[-1]
        self.whiten_stem, self.flip_tta = whiten_stem, flip_tta

        def norm(channels: int) -> nn.BatchNorm2d:
            bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=bn_momentum)
            bn.weight.requires_grad_(bn_weight)  # stays 1 when frozen, as airbench's
            return bn

        self.conv_stem = nn.Conv2d(in_chans, STEM_WIDTH, STEM_KERNEL, bias=True)
        rates = [drop_path_rate * i / 2 for i in range(3)]
        chs = (STEM_WIDTH, *widths)
        self.stage1, self.stage2, self.stage3 = (
            _Group(chs[i], chs[i + 1], norm, residual, rates[i]) for i in range(3))
        self.feature_info = [dict(num_chs=w, reduction=r, module=f"stage{i + 1}")
                             for i, (w, r) in enumerate(zip(widths, (2, 4, 8)))]
        self.fc = self._classifier(num_classes)
        if dirac_init:
            for module in self.modules():
                if isinstance(module, nn.Conv2d) and module is not self.conv_stem:
                    weight = module.weight.data
                    nn.init.dirac_(weight[:weight.shape[1]])
        if whiten_stem:
            self.conv_stem.weight.requires_grad_(False)

    def _classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes, bias=False) if num_classes \
            else nn.Identity()

    @torch.no_grad()
    def init_stem_from_images(self, images: torch.Tensor, max_patches: int = 2_000_000) -> None:
        """Set the frozen stem to whiten the 2x2 patches of ``images`` (model input, normalised,
        (N, C, H, W)). A no-op without ``whiten_stem``."""
        if not self.whiten_stem:
            return
        weight = self.conv_stem.weight
        c, k = weight.shape[1], weight.shape[-1]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)      # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        if len(patches) > max_patches:  # the covariance of a 2M-patch sample is plenty
            gen = torch.Generator().manual_seed(0)
            patches = patches[torch.randperm(len(patches), generator=gen)[:max_patches]]
        patches = patches.double()
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        basis = (eigenvectors.T / torch.sqrt(eigenvalues + WHITEN_EPS)[:, None]).flip(0)
        filters = torch.cat([basis, -basis])                          # 2 c k^2 filters
        if len(filters) < len(weight):  # a 1-channel stem: fill it with random mixtures
            gen = torch.Generator().manual_seed(0)
            mix = torch.randn(len(weight) - len(filters), len(basis), generator=gen,
                              dtype=basis.dtype) / math.sqrt(len(basis))
            filters = torch.cat([filters, mix @ basis])
        weight.copy_(filters[:len(weight)].reshape(weight.shape).to(weight.dtype))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = self._classifier(num_classes)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^conv_stem", "blocks": r"^stage(\d+)"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError("gradient checkpointing is not needed at this size")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv_stem(x))
        return self.stage3(self.stage2(self.stage1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.amax(dim=(2, 3)) if self.global_pool == "max" else x.mean(dim=(2, 3))
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x) * LOGIT_SCALE

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip_tta and not self.training:
            return 0.5 * (self._logits(x) + self._logits(x.flip(-1)))
        return self._logits(x)


# The constructor's options a run config may set (``model_options``).
OPTIONS = ("whiten_stem", "dirac_init", "bn_weight", "bn_momentum", "flip_tta", "global_pool")
MODELS = ("cifar_airbench_s", "cifar_airbench", "cifar_airbench_l")
default_cfgs = generate_default_cfgs({name: small_image_cfg(pool_size=(1, 1)) for name in MODELS})


@register_model
def cifar_airbench_s(pretrained: bool = False, **kwargs) -> AirbenchNet:
    """airbench's shape at 32/128/128, 0.5 M parameters."""
    return create(AirbenchNet, "cifar_airbench_s", pretrained, widths=(32, 128, 128), **kwargs)


@register_model
def cifar_airbench(pretrained: bool = False, **kwargs) -> AirbenchNet:
    """airbench94's network, 64/256/256, 2.0 M parameters."""
    return create(AirbenchNet, "cifar_airbench", pretrained, widths=(64, 256, 256), **kwargs)


@register_model
def cifar_airbench_l(pretrained: bool = False, **kwargs) -> AirbenchNet:
    """airbench96's shape: 128/384/512, three convolutions per group with a residual."""
    return create(AirbenchNet, "cifar_airbench_l", pretrained, widths=(128, 384, 512),
                  residual=True, **kwargs)
