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

from .noise import BatchedNoise, crop_flip


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: resolution, channels and normalisation."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        return cls(int(d["size"]), tuple(d["mean"]), tuple(d["std"]))


def to_model_input(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float (B, 3, size, size), resized and normalised."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        # Grayscale through an RGB-pretrained stem: repeat the channel, keep the weights.
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (spec.size, spec.size):
        shrinking = x.shape[-1] > spec.size
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear",
                          align_corners=False, antialias=shrinking)
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def no_augment(images: torch.Tensor) -> torch.Tensor:
    return images


def make_augment(settings) -> Callable[[torch.Tensor], torch.Tensor]:
    """The noise a TrainConfig (or subclass) asks for, uint8 batch -> uint8 batch: 'light'
    (pad-crop, flip), 'randaugment' (pad-crop, flip, RandAugment) or 'none'. Every task
    feeds its batch through this, then through the model's resize and normalisation."""
    padding = getattr(settings, "padding", "constant")
    if settings.augment == "randaugment":
        return BatchedNoise(settings.randaugment_ops, settings.randaugment_magnitude,
                            cutout_size=getattr(settings, "cutout", 0), padding_mode=padding)
    if settings.augment == "light":
        return lambda images: crop_flip(images, padding_mode=padding)
    return no_augment


class CleanPipeline:
    """No randomness: what evaluation and a pseudo-labeling teacher see."""

    def __init__(self, spec: InputSpec):
        self.spec = spec

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return to_model_input(images, self.spec)
