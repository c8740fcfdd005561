"""The model-input side of the batch pipelines: uint8 images on the device in, normalised
model input out (``to_model_input``, for the model an ``InputSpec`` describes).

Images stay uint8 in memory and are noised a whole batch at a time on the device, each image
with its own random draw (the ``noise`` package: ``noise.make_augment``, uint8 to uint8);
per-sample PIL transforms in DataLoader workers would cost more than the model on a 2-core CPU
and starve a GPU. The clean pipeline (evaluation, teachers) is ``CleanPipeline``; a training
task runs the noise, then ``to_model_input``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


def at_most(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, C, H, W) images larger than ``size`` shrunk to it (antialiased), others as
    they are. A training task noises at the model's resolution: the noise's strengths (a 4 px
    crop, Cutout's square) were set there, and it costs the model's pixels, not the stored
    ones (a 32 px student's RandAugment on 96 px photos ran at 633 images/s, 33x slower)."""
    if images.shape[-1] <= size and images.shape[-2] <= size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8)


class CleanPipeline:
    """No randomness: what evaluation and a pseudo-labeling teacher see."""

    def __init__(self, spec: InputSpec):
        self.spec = spec

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return to_model_input(images, self.spec)
