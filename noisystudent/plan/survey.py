"""What the plan knows of the data, read without decoding it all: how many labeled,
validation, test and unlabeled images, how many classes, how large the images are stored and
whether they are gray (a sample of files opened)."""

from __future__ import annotations

import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisystudent.core.errors import UserError
from noisystudent.data.fashion_mnist import (
    FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    IMAGE_SIZE,
    TEST_IMAGES,
    TRAIN_IMAGES,
)
from noisystudent.data.files import find_images, is_image_file
from noisystudent.data.splits import held_out

SAMPLED_IMAGES = 32     # files opened to learn the images' size and colour
COUNT_LIMIT = 1_000_000  # files counted in an unlabeled folder before calling it large


@dataclass(frozen=True)
class DataFacts:
    """What the plan knows of the data, read without decoding it all."""

    labeled: int        # labeled images the run trains on (after the validation split)
    val: int            # validation images
    test: int           # test images (0: no test set)
    classes: int
    pile: int           # unlabeled images
    stored_size: int    # median shorter side of the images as stored, px
    grayscale: bool
    pile_note: str = ""  # how the pile was counted, where it could not be
    decode: float = 0.0  # seconds to decode one unlabeled image (0: already in memory)
    streams: bool = False  # the pile streams from files (each pass decodes them again)

    def describe(self) -> str:
        colour = "gray" if self.grayscale else "colour"
        return (f"{self.labeled:,} labeled images ({self.val:,} for validation), "
                f"{self.pile:,} unlabeled{self.pile_note}, {self.classes} classes, "
                f"{self.stored_size} px {colour}")


def survey(shared: dict[str, Any], unlabeled: str | None, *, large_pile: int,
           unknown_size: int) -> DataFacts:
    """The data's facts from the shared settings (data, labels_per_class, val_fraction, ...)
    and the unlabeled source. Where it cannot look, it takes what the rules give: a pile of
    tar shards (not opened to count) as ``large_pile`` images, a sample of which no file
    opens as ``unknown_size`` px."""
    data, per_class = shared["data"], shared["labels_per_class"]
    if data == FASHION_MNIST:
        classes, sizes, gray = len(FASHION_MNIST_CLASSES), [IMAGE_SIZE], True
        counts = [TRAIN_IMAGES // classes] * classes
        test = TEST_IMAGES
    else:
        files_per_class = _labeled_files(Path(data))
        classes = len(files_per_class)
        counts = [len(files) for files in files_per_class.values()]
        sample = [f for files in files_per_class.values() for f in files[:4]]
        sizes, gray = _look_at(sample[:SAMPLED_IMAGES], unknown_size)
        test = len(_all_files(Path(shared["test_data"]))) if shared.get("test_data") else 0
    drawn = [min(per_class, n) if per_class else n for n in counts]
    val = shared["val_per_class"] * classes if shared["val_per_class"] else sum(
        held_out(n, shared["val_fraction"]) for n in drawn)
    labeled = sum(drawn) - (0 if shared["val_per_class"] else val)
    note, decode, streams = "", 0.0, False
    if unlabeled:
        pile, note, pile_sizes, pile_gray, decode = _pile(unlabeled, large_pile, unknown_size)
        sizes, gray, streams = sizes + pile_sizes, gray and pile_gray, \
            not unlabeled.endswith(".npy")
    else:
        pile = sum(counts) - sum(drawn) - (val if shared["val_per_class"] else 0)
    return DataFacts(labeled=labeled, val=val, test=test, classes=classes, pile=max(0, pile),
                     stored_size=int(statistics.median(sizes)), grayscale=gray,
                     pile_note=note, decode=decode, streams=streams)


def _labeled_files(path: Path) -> dict[str, list[Path]]:
    if path.is_dir():
        return {d.name: find_images(d) for d in sorted(path.iterdir())
                if d.is_dir() and not d.name.startswith(".")}
    if path.is_file() and path.suffix.lower() == ".csv":
        by_label: dict[str, list[Path]] = {}
        with path.open(newline="") as f:
            for row in csv.reader(f):
                if len(row) >= 2 and row[0] != "path":
                    by_label.setdefault(row[1], []).append(path.parent / row[0])
        return by_label
    raise UserError(f"data not found: {path} (give 'fashion-mnist', a folder or a .csv)")


def _all_files(path: Path) -> list[Path]:
    return find_images(path) if path.is_dir() else list(_labeled_files(path).values())


def _look_at(files: list[Path], unknown_size: int) -> tuple[list[int], bool]:
    """The shorter side of each file that opens, and whether all of them are gray."""
    import numpy as np
    from PIL import Image

    sizes, gray = [], True
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                sizes.append(min(img.size))
                if img.mode not in ("L", "1", "I", "I;16", "F"):
                    pixels = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.int16)
                    gray = gray and int(np.abs(pixels - pixels[..., :1]).max()) <= 2
        except (OSError, ValueError):
            continue  # the loaders count and report unreadable files
    return sizes or [unknown_size], gray


def _pile(unlabeled: str, large_pile: int, unknown_size: int
          ) -> tuple[int, str, list[int], bool, float]:
    """(count, how it was counted, sampled sizes, gray, seconds to decode one) of the
    unlabeled source."""
    path = Path(unlabeled)
    if path.suffix == ".npy" and path.is_file():
        import numpy as np

        shape = np.load(path, mmap_mode="r").shape
        return shape[0], "", [shape[-1]], shape[1] == 1, 0.0
    if path.is_dir() and not any(path.glob("*.tar")):
        files, note = [], ""
        for item in path.rglob("*"):
            if is_image_file(item):
                files.append(item)
                if len(files) >= COUNT_LIMIT:
                    note = " (counted up to here)"
                    break
        sample = files[::max(1, len(files) // SAMPLED_IMAGES)][:SAMPLED_IMAGES]
        started = time.perf_counter()
        sizes, gray = _look_at(sample, unknown_size)
        return len(files), note, sizes, gray, (time.perf_counter() - started) / max(1, len(sample))
    # Tar shards: not opened to count; a pile split into shards is large.
    return large_pile, " (tar shards: taken as large)", [], True, 0.0
