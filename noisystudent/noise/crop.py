"""Pad-crop and horizontal flip on a whole uint8 batch, each image with its own offsets and
flip: one gather for the batch, the draws on the batch's device."""

from __future__ import annotations

import torch

from .batch import check_batch

__all__ = ["PADDING_MODES", "check_padding_mode", "crop_flip", "translate_flip"]

PADDING_MODES = ("constant", "reflect")  # the config's ``padding``
# The pad is 1/8 of the side: 4 px at 32 px, the usual CIFAR pad-crop. Not a setting: no
# config has asked for another.
PAD_FRACTION = 1 / 8


def check_padding_mode(padding_mode: str) -> None:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def translate_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                   flips: torch.Tensor, pad: int, *,
                   padding_mode: str = "constant") -> torch.Tensor:
    """Per image the (H, W) window at offset (dy[i], dx[i]) of the image padded by ``pad`` on
    every side, mirrored left-right where ``flips[i]``; one gather for the whole batch.

    dy, dx: (B,) integer tensors in [0, 2 * pad]; flips: (B,) bool. ``padding_mode`` is
    "constant" (zeros) or "reflect" (as ``F.pad(mode="reflect")``, needs pad < H and pad < W)."""
    check_batch(images)
    check_padding_mode(padding_mode)
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
    else:
        rows = torch.where(rows < 0, -rows, torch.where(rows > h - 1, 2 * (h - 1) - rows, rows))
        cols = torch.where(cols < 0, -cols, torch.where(cols > w - 1, 2 * (w - 1) - cols, cols))
    index = (rows.view(b, h, 1) * w + cols.view(b, 1, w)).view(b, 1, h * w)
    out = images.reshape(b, c, h * w).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)
    if valid is not None:
        out = out * valid.to(torch.uint8)
    return out


def crop_flip(images: torch.Tensor, padding_mode: str = "constant") -> torch.Tensor:
    """Per-image random translation by up to ``pad = round(H / 8)`` pixels (a random (H, W)
    crop of the padded image) and horizontal flip with probability 0.5, on uint8. Images
    under 5 px get no translation (pad 0), only the flip."""
    check_batch(images)
    b, _, h, _ = images.shape
    device = images.device
    pad = round(h * PAD_FRACTION)
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (b,), device=device)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=device)
    else:
        dy = dx = torch.zeros(b, dtype=torch.long, device=device)
    flips = torch.rand(b, device=device) < 0.5
    return translate_flip(images, dy, dx, flips, pad, padding_mode=padding_mode)
