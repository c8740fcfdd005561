"""Batch pipelines: uint8 images on the device in, normalised model input out.

Images stay uint8 in memory and are augmented a whole batch at a time on the device, each image
with its own random draw (``noise.py``); per-sample PIL transforms in DataLoader workers would
cost more than the model on a 2-core CPU and starve a GPU. Two explicit pipelines: the clean
one (evaluation, teachers) and the noised one (training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .noise import PADDING_MODES, Fill, crop_flip, cutout
from .randaugment import BatchedRandAugment


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: resolution, normalisation and channels (3, or 1 for a model
    built with ``in_chans=1``; mean and std then hold one value)."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        # Runs saved before 1-channel models existed hold no "channels": they are RGB.
        return cls(int(d["size"]), tuple(d["mean"]), tuple(d["std"]), int(d.get("channels", 3)))


# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def to_model_input(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float (B, spec.channels, size, size), resized and normalised."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1 and spec.channels == 3:
        # Grayscale through an RGB-pretrained stem: repeat the channel, keep the weights.
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and spec.channels == 1:
        x = (x * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[-2:] != (spec.size, spec.size):
        shrinking = x.shape[-1] > spec.size
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear",
                          align_corners=False, antialias=shrinking)
    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def no_augment(images: torch.Tensor) -> torch.Tensor:
    return images


class BatchedNoise:
    """The student's input noise on a uint8 batch: ``crop_flip`` (pad-crop by 1/8 of the size
    and horizontal flip), then ``BatchedRandAugment(num_ops, magnitude)``, then ``cutout`` of
    side ``cutout_size`` (0 = off); every draw per image, no loop over images."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, cutout_size: int = 0,
                 padding_mode: str = "constant", pad_fraction: float = 0.125,
                 flip: bool = True, fill: Fill = 0, cutout_op: bool = False):
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.randaugment = BatchedRandAugment(num_ops, magnitude, fill=fill, cutout_op=cutout_op)
        self.cutout_size = cutout_size
        self.padding_mode = padding_mode
        self.pad_fraction = pad_fraction
        self.flip = flip
        self.fill = fill

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.randaugment!r}, cutout_size={self.cutout_size}, "
                f"padding_mode={self.padding_mode!r}, pad_fraction={self.pad_fraction}, "
                f"flip={self.flip})")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = crop_flip(images, self.pad_fraction, self.flip, self.padding_mode)
        out = self.randaugment(out)
        if self.cutout_size > 0:
            out = cutout(out, self.cutout_size, self.fill)
        return out


def make_augment(settings) -> Callable[[torch.Tensor], torch.Tensor]:
    """The noise a TrainConfig (or subclass) asks for, uint8 batch -> uint8 batch: 'light'
    (pad-crop, flip), 'randaugment' (pad-crop, flip, RandAugment) or 'none'. Every task
    feeds its batch through this, then through the model's resize and normalisation."""
    if settings.augment == "randaugment":
        return BatchedNoise(settings.randaugment_ops, settings.randaugment_magnitude,
                            cutout_size=settings.cutout, padding_mode=settings.padding)
    if settings.augment == "light":
        return lambda images: crop_flip(images, padding_mode=settings.padding)
    return no_augment


class CleanPipeline:
    """No randomness: what evaluation and a pseudo-labeling teacher see."""

    def __init__(self, spec: InputSpec):
        self.spec = spec

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return to_model_input(images, self.spec)
