"""Finding the image files below a folder: what the folder loaders (``images.py``) and
``pack_folder`` (``arrays.py``) both read."""

from __future__ import annotations

from pathlib import Path

from noisystudent.core.errors import UserError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)

def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _visible(path: Path, root: Path) -> bool:
    # Skip hidden files/dirs, e.g. macOS "._photo.jpg" resource forks that aren't images.
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def find_images(root: Path) -> list[Path]:
    """Every visible image file below ``root`` (nested allowed), in sorted path order."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and is_image_file(p) and _visible(p, root)
    )


def check_dir(root: Path, what: str) -> None:
    """A one-line error unless ``root`` is an existing folder (``what`` names it)."""
    if not root.exists():
        raise UserError(f"{what} {root} does not exist; check the path")
    if not root.is_dir():
        raise UserError(f"{what} {root} is not a directory; pass a folder of images")
