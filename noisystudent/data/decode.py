"""Image files to uint8 arrays, with PIL and numpy only (no torch): what training, prediction
and the deployed ONNX model (``noisystudent.deploy``) all read images with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from noisystudent.core.errors import UserError

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class UnreadableImage(Exception):
    """A file that is missing, not an image, or truncated; loaders skip (or, strict, reject) it."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """High-bit-depth single-channel modes -> "L", scaled by bit depth rather than clipped."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        bits = 16
    elif img.mode == "I":
        # Pillow uses "I" for 16-bit PGM (already scaled to 0..65535) and 32-bit TIFF.
        tag = img.tag_v2.get(258) if hasattr(img, "tag_v2") else None  # TIFF BitsPerSample
        bits = int(tag[0]) if tag else 16
        if arr.size and arr.max() > 65535:
            bits = 32
    else:  # "F": floats are taken as already being on the 0..255 scale
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    scaled = np.clip(arr.astype(np.float64), 0, None) / (2**bits - 1) * 255.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def open_image(path: str | Path, channels: int) -> Image.Image:
    """Open, fully decode and convert to "L" (channels=1) or "RGB" (channels=3)."""
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now so truncated files fail here, not later
            img = ImageOps.exif_transpose(img)  # phone photos are stored rotated
            if img.mode.startswith("I") or img.mode == "F":
                img = _to_8bit(img)
            elif img.mode == "1":
                img = img.convert("L")
            if img.mode in _ALPHA_MODES or "transparency" in img.info:
                # Composite onto white: transparent background should not turn black.
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba).convert("RGB")
            elif img.mode not in ("L", "RGB"):
                img = img.convert("RGB")  # P, CMYK, YCbCr, ...
            return img.convert("L" if channels == 1 else "RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{path}: {e}") from e


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to size (bilinear, antialiased) and center crop a square."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    # resize(box=...) crops and scales in one pass, so the crop is exact at subpixel level.
    return img.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))


def decode_image(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image file as uint8 (size, size, C), resized and center-cropped; raises
    UnreadableImage for a file that cannot be read."""
    arr = np.asarray(resize_center_crop(open_image(path, channels), size), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def read_image(path: str | Path, channels: int, size: int) -> np.ndarray:
    """One image file as uint8 (C, size, size), as a run stored its training images; a
    missing or unreadable file is a one-line error."""
    if not Path(path).is_file():
        raise UserError(f"image not found: {path}")
    try:
        array = decode_image(path, size, channels)
    except UnreadableImage as err:
        raise UserError(f"cannot read image {path}: {err}") from None
    return array.transpose(2, 0, 1).copy()
