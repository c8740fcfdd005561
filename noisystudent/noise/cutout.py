"""Cutout (DeVries & Taylor 2017) on a whole uint8 batch: per image one square set to zero,
each at its own random centre; the config's ``cutout`` (its side), applied after RandAugment."""

from __future__ import annotations

import torch

from .batch import check_batch

__all__ = ["cutout", "cutout_at"]


def _square(cy: torch.Tensor, cx: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W) bool: rows [cy - size//2, cy - size//2 + size) x the same for columns,
    clipped at the borders by construction of the comparison."""
    b = cy.shape[0]
    top = (cy - size // 2).view(b, 1, 1, 1)
    left = (cx - size // 2).view(b, 1, 1, 1)
    rows = torch.arange(h, device=cy.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=cy.device).view(1, 1, 1, w)
    return (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)


def cutout_at(images: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor,
              size: int) -> torch.Tensor:
    """One ``size`` x ``size`` square per image centred at (cy[i], cx[i]), clipped at the
    borders, set to zero (black, as the padding of the crop and of RandAugment's geometry)."""
    check_batch(images)
    if size <= 0:
        return images.clone()
    _, _, h, w = images.shape
    return images * ~_square(cy, cx, size, h, w)


def cutout(images: torch.Tensor, size: int) -> torch.Tensor:
    """Per image one square of side ``size`` at a uniformly random centre (any pixel of the
    image), clipped at the borders, set to zero."""
    check_batch(images)
    b, _, h, w = images.shape
    cy = torch.randint(0, h, (b,), device=images.device)
    cx = torch.randint(0, w, (b,), device=images.device)
    return cutout_at(images, cy, cx, size)
