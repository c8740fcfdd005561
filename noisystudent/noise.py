"""Batched student noise: pad-crop, flip and Cutout on a whole uint8 batch (RandAugment, built
on these helpers, is in ``randaugment.py``; ``transforms.BatchedNoise`` chains them).

Every image of the batch draws its own crop offsets, flip, RandAugment ops and signs and cutout
position, as a per-image loop would, but the work is done on the whole (B, C, H, W) batch on
whatever device it lives: each op kind is computed for the batch and every image keeps its own
result (an exact select by a 0/1 mask). No loop over images
and nothing that waits for the device (no ``.item()``, ``.tolist()``, ``.nonzero()``, boolean-mask
indexing or ``bincount``, whose output size depends on the data): the random draws stay on the
device and the per-(op, sign) parameters are looked up in small tables that are built once per
image size and device.

"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["crop_flip", "cutout", "cutout_at", "translate_flip"]

PADDING_MODES = ("constant", "reflect", "replicate")
Fill = float | Sequence[float]


def check_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected a (B, C, H, W) batch with C = 1 or 3, got {tuple(images.shape)}")


def fill_channels(fill: Fill, channels: int) -> list[float]:
    values = [float(fill)] if isinstance(fill, (int, float)) else [float(v) for v in fill]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"fill has {len(values)} values for {channels} channels")
    return values


def select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` where ``mask`` (broadcastable bool) else ``b``, exactly. On uint8, b + (a - b) * m
    wraps around to a or b; on floats, a * m + b * (1 - m) adds an exact zero. Both are several
    times faster than ``torch.where``, which is not vectorised on CPU."""
    m = mask.to(a.dtype)
    if a.dtype == torch.uint8:
        return b + (a - b) * m
    return a * m + b * (1 - m)


def fill_where(mask: torch.Tensor, fill: Fill, images: torch.Tensor) -> torch.Tensor:
    """``images`` with ``fill`` where ``mask`` (broadcast to (B, 1, H, W)) is set; a per-channel
    fill is applied channel by channel with Python scalars, so no tensor is sent to the device."""
    values = fill_channels(fill, images.shape[1])
    m = mask.to(images.dtype)

    def filled(channels: torch.Tensor, value: float) -> torch.Tensor:
        if images.dtype == torch.uint8:
            return channels + (int(value) - channels) * m  # wraps around to exactly value
        return channels * (1 - m) + value * m

    if len(set(values)) == 1:
        return filled(images, values[0])
    return torch.cat([filled(images[:, k:k + 1], v) for k, v in enumerate(values)], dim=1)


# --------------------------------------------------------------------------- crop and flip


def translate_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                   flips: torch.Tensor, pad: int, padding_mode: str = "constant") -> torch.Tensor:
    """Per image the (H, W) window at offset (dy[i], dx[i]) of the image padded by ``pad`` on
    every side, mirrored left-right where ``flips[i]``; one gather for the whole batch.

    dy, dx: (B,) integer tensors in [0, 2 * pad]; flips: (B,) bool. ``padding_mode`` is
    "constant" (zeros), "reflect" (as ``F.pad(mode="reflect")``, needs pad < H and pad < W) or
    "replicate" (edge pixels)."""
    check_batch(images)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    b, c, h, w = images.shape
    if padding_mode == "reflect" and (pad >= h or pad >= w):
        raise ValueError(f"reflect padding needs pad < image size, got pad={pad} for {h}x{w}")
    device = images.device
    i = torch.arange(h, device=device)
    j = torch.arange(w, device=device)
    # Source coordinates in the unpadded image; a flip mirrors the window, so column j of the
    # output is column w-1-j of the window.
    rows = dy.view(b, 1) - pad + i
    cols = dx.view(b, 1) - pad + torch.where(flips.view(b, 1), w - 1 - j, j)
    valid = None
    if padding_mode == "constant":
        valid = (((rows >= 0) & (rows < h)).view(b, 1, h, 1)
                 & ((cols >= 0) & (cols < w)).view(b, 1, 1, w))
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    elif padding_mode == "reflect":
        rows = torch.where(rows < 0, -rows, torch.where(rows > h - 1, 2 * (h - 1) - rows, rows))
        cols = torch.where(cols < 0, -cols, torch.where(cols > w - 1, 2 * (w - 1) - cols, cols))
    else:
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    index = (rows.view(b, h, 1) * w + cols.view(b, 1, w)).view(b, 1, h * w)
    out = images.reshape(b, c, h * w).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)
    if valid is not None:
        out = out * valid.to(torch.uint8)
    return out


def crop_flip(images: torch.Tensor, pad_fraction: float = 0.125, flip: bool = True,
              padding_mode: str = "constant") -> torch.Tensor:
    """Per-image random translation by up to ``pad = round(H * pad_fraction)`` pixels (a random
    (H, W) crop of the padded image) and horizontal flip with probability 0.5, on uint8.

    pad_fraction=0 means no translation. No loop over images and no host-device sync."""
    check_batch(images)
    b, _, h, _ = images.shape
    device = images.device
    pad = round(h * pad_fraction)
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (b,), device=device)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=device)
    else:
        dy = dx = torch.zeros(b, dtype=torch.long, device=device)
    if flip:
        flips = torch.rand(b, device=device) < 0.5
    else:
        flips = torch.zeros(b, dtype=torch.bool, device=device)
    if pad == 0 and not flip:
        return images.clone()
    return translate_flip(images, dy, dx, flips, pad, padding_mode)


# --------------------------------------------------------------------------- cutout


def _cutout_mask(cy: torch.Tensor, cx: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W) bool: rows [cy - size//2, cy - size//2 + size) x the same for columns,
    clipped at the borders by construction of the comparison."""
    b = cy.shape[0]
    top = (cy - size // 2).view(b, 1, 1, 1)
    left = (cx - size // 2).view(b, 1, 1, 1)
    rows = torch.arange(h, device=cy.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=cy.device).view(1, 1, 1, w)
    return (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)


def cutout_at(images: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int,
              fill: Fill = 0) -> torch.Tensor:
    """One ``size`` x ``size`` square per image centred at (cy[i], cx[i]), clipped at the
    borders, set to ``fill`` (a number or one per channel)."""
    check_batch(images)
    if size <= 0:
        return images.clone()
    _, _, h, w = images.shape
    return fill_where(_cutout_mask(cy, cx, size, h, w), fill, images)


def cutout(images: torch.Tensor, size: int, fill: Fill = 0) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): per image one square of side ``size`` at a uniformly
    random centre (any pixel of the image), clipped at the borders, set to ``fill``."""
    check_batch(images)
    b, _, h, w = images.shape
    cy = torch.randint(0, h, (b,), device=images.device)
    cx = torch.randint(0, w, (b,), device=images.device)
    return cutout_at(images, cy, cx, size, fill)
