"""Locate, (optionally) download and load Fashion-MNIST."""

from __future__ import annotations

import functools
import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch

from noisystudent.core.errors import UserError

from .idx import read_idx
from .imageset import ImageSet

FASHION_MNIST = "fashion-mnist"  # the ``data`` setting that names it
TRAIN_IMAGES, TEST_IMAGES, IMAGE_SIZE = 60_000, 10_000, 28  # gray images
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# Base names of the four IDX files with the MD5 of the official .gz downloads.
FILES = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", TRAIN_IMAGES),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", TEST_IMAGES),
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{}.gz"
ENV_VAR = "NOISYSTUDENT_DATA_DIR"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 20


def cache_dir() -> Path:
    return Path.home() / ".cache" / "noisystudent" / "fashion-mnist"


def _file_in(directory: Path, base: str) -> Path | None:
    for name in (base + ".gz", base):
        if (directory / name).is_file():
            return directory / name
    return None


def _has_all(directory: Path) -> bool:
    return all(_file_in(directory, base) is not None for base in FILES)


def _download(dest: Path) -> None:
    """Fetch the four .gz files into dest, checking MD5; raises OSError/ValueError on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    for base, md5 in FILES.items():
        final = dest / (base + ".gz")
        if final.is_file() and hashlib.md5(final.read_bytes()).hexdigest() == md5:
            continue
        with urllib.request.urlopen(URL.format(base), timeout=DOWNLOAD_TIMEOUT_S) as resp:
            data = resp.read()
        if hashlib.md5(data).hexdigest() != md5:
            raise ValueError(f"checksum mismatch for {base}.gz")
        # Temp name + rename so an interrupted download never looks complete.
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, final)


def find_fashion_mnist(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Return the directory that holds the four Fashion-MNIST IDX files."""
    candidates: list[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]).expanduser())
    candidates += [cache_dir(), SYSTEM_DIR]
    for directory in candidates:
        if _has_all(directory):
            return directory

    why = "download disabled"
    if download:
        try:
            _download(cache_dir())
            return cache_dir()
        except (OSError, ValueError) as e:
            why = "download failed: " + " ".join(str(e).split())  # keep the error one line
    looked = ", ".join(str(c) for c in candidates)
    raise UserError(
        f"Fashion-MNIST not found (looked in {looked}; {why}); install it with "
        f"'apt-get install dataset-fashion-mnist', or put the four IDX files "
        f"({', '.join(FILES)}, .gz or not) in a directory and pass --data-dir DIR "
        f"or set {ENV_VAR}=DIR"
    )


@functools.lru_cache(maxsize=4)
def _read_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_base, lbl_base, n = SPLITS[split]
    images = read_idx(_file_in(Path(directory), img_base))
    labels = read_idx(_file_in(Path(directory), lbl_base))
    if images.shape != (n, IMAGE_SIZE, IMAGE_SIZE) or labels.shape != (n,) or \
            images.dtype != np.uint8:
        raise UserError(
            f"Fashion-MNIST {split} files in {directory} have unexpected shapes "
            f"{images.shape}/{labels.shape}; replace them with the official files"
        )
    if labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES):
        raise UserError(f"Fashion-MNIST {split} labels in {directory} are out of range 0..9")
    images.setflags(write=False)  # cached and shared: guard against in-place edits
    labels.setflags(write=False)
    return images, labels


def load_fashion_mnist(
    split: str, data_dir: str | Path | None = None, download: bool = True
) -> ImageSet:
    """Load the 'train' (60000) or 'test' (10000) split as (N, 1, 28, 28) uint8."""
    if split not in SPLITS:
        raise UserError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    directory = find_fashion_mnist(data_dir, download=download)
    images, labels = _read_split(str(directory.resolve()), split)
    # Copy so callers may modify their tensors without touching the cache.
    return ImageSet(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(FASHION_MNIST_CLASSES),
    )
