"""Load the user's own images: an ImageFolder tree, an unlabeled folder or packed .npy, or a
CSV manifest."""

from __future__ import annotations

import csv
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from noisystudent.core.errors import UserError

from .arrays import NpyImages
from .decode import UnreadableImage, decode_image
from .files import IMAGE_EXTENSIONS, check_dir, find_images
from .imageset import ImageSet


def decode_images(
    paths: list[str], labels: list[int], classes: list[str], *, size: int, channels: int,
    strict: bool, contents: list[bytes | None] | None = None
) -> ImageSet:
    """The images at ``paths`` (or, given ``contents``, those bytes, named by ``paths``) at
    ``size`` with ``channels``; an unreadable one is skipped and counted (``strict``: a
    one-line error)."""
    if size <= 0:
        raise UserError(f"image size must be positive, got {size}")
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels}")

    def work(i: int):
        try:
            if contents is None:
                return decode_image(paths[i], size, channels)
            if contents[i] is None:
                raise UnreadableImage(paths[i]) from ValueError("no image bytes")
            return decode_image(io.BytesIO(contents[i]), size, channels)
        except UnreadableImage as e:
            return e

    out = np.empty((len(paths), size, size, channels), dtype=np.uint8)
    ok: list[int] = []
    skipped: list[str] = []
    # Threads overlap file I/O with decoding; PIL releases the GIL while decoding.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, result in enumerate(pool.map(work, range(len(paths)))):
            if isinstance(result, UnreadableImage):
                if strict:
                    pool.shutdown(cancel_futures=True)  # don't decode the rest first
                    raise UserError(
                        f"unreadable image {paths[i]} ({result.__cause__}); "
                        "fix or remove it, or drop --strict to skip it"
                    )
                skipped.append(paths[i])
            else:
                out[i] = result
                ok.append(i)

    if skipped:
        names = ", ".join(skipped[:10]) + (
            f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        )
        warnings.warn(f"skipped {len(skipped)} unreadable images: {names}", stacklevel=3)
    if not ok:
        raise UserError(f"none of the {len(paths)} images could be read; check the files")
    keep = np.asarray(ok, dtype=np.int64)
    return ImageSet(
        images=torch.from_numpy(out[keep]).permute(0, 3, 1, 2).contiguous(),
        labels=torch.as_tensor(np.asarray(labels, dtype=np.int64)[keep]),
        classes=classes,
        paths=None if contents is not None else [paths[i] for i in ok],
        skipped=skipped,
    )


def load_image_folder(
    root: str | Path, size: int, channels: int = 3, strict: bool = False
) -> ImageSet:
    """ImageFolder layout root/<class>/...images (nested allowed); classes sorted by name."""
    root = Path(root).expanduser()
    check_dir(root, "image folder")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{root} has no class folders; expected {root}/<class name>/<images>")
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, d in enumerate(class_dirs):
        files = find_images(d)
        paths += [str(p) for p in files]
        labels += [label] * len(files)
        if not files:
            empty.append(d.name)
    if not paths:
        raise UserError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in the class folders of {root}"
        )
    if empty:  # a class without images can be neither learned nor tested
        raise UserError(f"class folder(s) {', '.join(empty)} in {root} hold no images; "
                        "add images or remove the folder(s)")
    return decode_images(paths, labels, [d.name for d in class_dirs], size=size,
                       channels=channels, strict=strict)


def load_unlabeled_folder(
    root: str | Path, size: int, channels: int = 3, strict: bool = False
) -> ImageSet:
    """Every image below root (flat or nested), in sorted path order, with label -1."""
    root = Path(root).expanduser()
    check_dir(root, "unlabeled folder")
    files = find_images(root)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return decode_images([str(p) for p in files], [-1] * len(files), [], size=size,
                       channels=channels, strict=strict)


def load_npy_images(path: str | Path) -> ImageSet:
    """Unlabeled images streamed from a .npy file (labels -1)."""
    images = NpyImages(path)
    # -1 broadcast, not stored: an unlabeled set's labels cost nothing per image.
    return ImageSet(images=images, labels=torch.tensor(-1, dtype=torch.int64).expand(len(images)),
                    classes=[])


def _inside(csv_path: Path, line: int, path: str) -> str:
    """The manifest's path resolved against its folder, refused when it escapes that folder
    (``../``, or an absolute path elsewhere): a manifest must not reach arbitrary files."""
    root = os.path.abspath(csv_path.parent)
    full = os.path.normpath(os.path.join(root, path))  # an absolute path replaces root
    if os.path.commonpath([root, full]) != root:
        raise UserError(f"{csv_path} line {line}: {path} is outside the manifest's folder "
                        f"{root}; list files below it")
    return full


def load_manifest(
    csv_path: str | Path,
    size: int,
    channels: int = 3,
    strict: bool = False,
    classes: list[str] | None = None,
) -> ImageSet:
    """CSV with header path,label; paths are relative to the CSV's folder and must stay inside
    it; an empty label means unlabeled."""
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise UserError(f"manifest {csv_path} does not exist; check the path")
    rows: list[tuple[int, str, str]] = []
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in ("path", "label") if c not in header]
        if missing:
            raise UserError(
                f"{csv_path} line 1: header is missing column(s) {', '.join(missing)}; "
                "the first line must be 'path,label'"
            )
        ip, il = header.index("path"), header.index("label")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) <= ip:
                raise UserError(
                    f"{csv_path} line {reader.line_num}: no path column; expected 'path,label'"
                )
            path = row[ip].strip()
            label = row[il].strip() if len(row) > il else ""
            if not path:
                raise UserError(f"{csv_path} line {reader.line_num}: empty path")
            rows.append((reader.line_num, path, label))
    if not rows:
        raise UserError(
            f"manifest {csv_path} lists no images; add lines 'path,label' after the header"
        )

    if classes is None:
        classes = sorted({label for _, _, label in rows if label})
    index = {name: i for i, name in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for line, path, label in rows:
        if label and label not in index:
            raise UserError(
                f"{csv_path} line {line}: label {label!r} is not one of the classes "
                f"{', '.join(classes)}; fix the label or the class list"
            )
        paths.append(_inside(csv_path, line, path))
        labels.append(index[label] if label else -1)
    return decode_images(paths, labels, list(classes), size=size, channels=channels,
                       strict=strict)
