"""What every noise op takes and returns: a uint8 (B, C, H, W) batch with C = 1 or 3."""

from __future__ import annotations

import torch


def check_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected a (B, C, H, W) batch with C = 1 or 3, got {tuple(images.shape)}")
