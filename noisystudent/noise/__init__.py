"""The student's noise. Its input noise lives here, on uint8 batches; its model noise is set
elsewhere (below).

Input noise, in the order ``BatchedNoise`` applies it:

- ``crop.py``: pad-crop (a random crop of the image padded by 1/8 of its side, with zeros or
  reflected pixels: the config's ``padding``) and horizontal flip;
- ``randaugment.py``: RandAugment, ``randaugment_ops`` ops per image at
  ``randaugment_magnitude`` (torchvision's 14 ops, magnitude tables and arithmetic);
- ``cutout.py``: Cutout, one zero square of side ``cutout`` per image (0 = off).

``make_augment(config)`` builds the noise of the config's ``augment``: 'randaugment' (all
three), 'light' (pad-crop and flip) or 'none'. Every task feeds its uint8 batch through it, then
through the model's resize and normalisation (``models.transforms.to_model_input``).

Every image draws its own crop offsets, flip, RandAugment ops and signs and cutout position, as
a per-image loop would, but the work is done on the whole (B, C, H, W) batch on whatever device
it lives, with no loop over images and nothing that waits for the device (no ``.item()``,
``.tolist()``, ``.nonzero()``, boolean-mask indexing or ``bincount``, whose output size depends
on the data): the random draws stay on the device.

Model noise: dropout before the classifier (``drop_rate``) and stochastic depth
(``drop_path_rate``) are config fields (``config.py``; a student's defaults are stronger than a
teacher's) that ``stages.stage.build_model`` passes to ``models.build.create_model``, which
builds the timm model with them; they act in the model's forward in training mode only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import cutout
from .crop import PADDING_MODES, check_padding_mode, crop_flip
from .randaugment import BatchedRandAugment

__all__ = ["PADDING_MODES", "BatchedNoise", "make_augment"]


class BatchedNoise:
    """The student's input noise on a uint8 batch: ``crop_flip`` (pad-crop by 1/8 of the size
    and horizontal flip), then ``BatchedRandAugment(num_ops, magnitude)``, then ``cutout`` of
    side ``cutout_size`` (0 = off); every draw per image, no loop over images."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, cutout_size: int = 0,
                 padding_mode: str = "constant"):
        check_padding_mode(padding_mode)
        self.randaugment = BatchedRandAugment(num_ops, magnitude)
        self.cutout_size = cutout_size
        self.padding_mode = padding_mode

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.randaugment!r}, cutout_size={self.cutout_size}, "
                f"padding_mode={self.padding_mode!r})")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = crop_flip(images, self.padding_mode)
        out = self.randaugment(out)
        if self.cutout_size > 0:
            out = cutout.cutout(out, self.cutout_size)
        return out


def no_augment(images: torch.Tensor) -> torch.Tensor:
    return images


def make_augment(settings) -> Callable[[torch.Tensor], torch.Tensor]:
    """The noise a TrainConfig (or subclass) asks for, uint8 batch -> uint8 batch: 'light'
    (pad-crop, flip), 'randaugment' (pad-crop, flip, RandAugment, Cutout if ``cutout``) or
    'none'."""
    if settings.augment == "randaugment":
        return BatchedNoise(settings.randaugment_ops, settings.randaugment_magnitude,
                            cutout_size=settings.cutout, padding_mode=settings.padding)
    if settings.augment == "light":
        return lambda images: crop_flip(images, padding_mode=settings.padding)
    return no_augment
