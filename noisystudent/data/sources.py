"""Which images a run trains and tests on: Fashion-MNIST or the user's own labeled data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from noisystudent.core.config import SharedSettings
from noisystudent.core.errors import UserError

from .fashion_mnist import FASHION_MNIST, load_fashion_mnist
from .hf import dataset_spec, load_dataset_labeled
from .images import decode_images, load_image_folder, load_manifest
from .imageset import ImageSet, concatenate
from .label_studio import is_export, read_export

log = logging.getLogger(__name__)


def load_labeled(path: str | Path, size: int, channels: int, strict: bool,
                 classes: list[str] | None = None, *, split: tuple[str, ...] = ("train",),
                 columns: tuple[str | None, str | None] = (None, None)) -> ImageSet:
    """An ImageFolder tree (one folder per class), a ``path,label`` CSV manifest, or a Hugging
    Face dataset's ``split`` (the first of them it has) with its image and label ``columns``
    (None: found)."""
    spec = dataset_spec(path)
    path = Path(path)
    if spec is not None:
        images = load_dataset_labeled(spec, split, size, channels, strict, columns=columns)
    elif path.is_dir():
        images = load_image_folder(path, size, channels=channels, strict=strict)
    elif path.is_file() and path.suffix.lower() == ".csv":
        images = load_manifest(path, size, channels=channels, strict=strict, classes=classes)
    elif not path.exists():
        raise UserError(f"data not found: {path} (give 'fashion-mnist', a folder, a .csv or a "
                        "Hugging Face dataset)")
    else:
        raise UserError(f"{path} is neither a folder of class folders nor a .csv manifest")
    if classes is not None and images.classes != classes:
        raise UserError(f"{path} has classes {images.classes}, the training data has {classes}")
    return images


def load_test_set(settings: SharedSettings, size: int, *,
                  classes: list[str] | None = None) -> ImageSet | None:
    """The test set alone (None when the user gave no test data); your own images are read
    at ``size`` and must have the training data's ``classes``."""
    if settings.data == FASHION_MNIST:
        return load_fashion_mnist("test", settings.data_dir)
    if not settings.test_data:
        return None
    return load_labeled(settings.test_data, size, settings.channels, settings.strict,
                        classes=classes, split=("test",), columns=columns_of(settings))


def columns_of(settings: SharedSettings) -> tuple[str | None, str | None]:
    """The Hugging Face image and label columns the settings name (None: found)."""
    return settings.image_column, settings.label_column


def load_train_and_test(settings: SharedSettings,
                        size: int) -> tuple[ImageSet, ImageSet | None, int]:
    """The labeled training pool, the test set (None when the user gave no test data), and
    how many images ``extra_labeled`` appended to the pool (its last ones)."""
    train = load_fashion_mnist("train", settings.data_dir) if settings.data == FASHION_MNIST \
        else load_labeled(settings.data, size, settings.channels, settings.strict,
                          columns=columns_of(settings))
    extra = [load_extra_labeled(path, train, settings.strict)
             for path in settings.extra_labeled]
    pool = concatenate([train, *extra]) if extra else train
    return pool, load_test_set(settings, size, classes=train.classes), len(pool) - len(train)


def load_extra_labeled(path: str, train: ImageSet, strict: bool) -> ImageSet:
    """A manifest's labeled rows, or a Label Studio JSON export's labeled tasks, read as the
    pool stores its images (size, channels) and with its classes; the rows (tasks) still
    without a label are left out, and counted."""
    size = int(train.images.shape[-1])
    if is_export(path):
        return load_export(path, train, strict)
    images = load_manifest(path, size, channels=train.channels, strict=strict,
                           classes=train.classes)
    labeled = torch.nonzero(images.labels >= 0).flatten()
    if len(labeled) < len(images):
        log.info("%s: %d of %d rows have no label yet and are left out", path,
                 len(images) - len(labeled), len(images))
    if len(labeled) == 0:
        raise UserError(f"{path} has no labeled row; fill in the label column (one of "
                        f"{', '.join(train.classes)})")
    return images.subset(labeled)


def load_export(path: str, train: ImageSet, strict: bool) -> ImageSet:
    """A Label Studio JSON export's labeled tasks (``data/label_studio.py``), as the pool
    stores its images and with its classes."""
    files, names = read_export(path)
    if not files:
        raise UserError(f"{path} has no labeled task; choose a label for some images in Label "
                        "Studio and export the project again")
    index = {name: i for i, name in enumerate(train.classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise UserError(f"{path}: label {unknown[0]!r} is not one of the classes "
                        f"{', '.join(train.classes)}")
    return decode_images(files, [index[name] for name in names], list(train.classes),
                         size=int(train.images.shape[-1]), channels=train.channels,
                         strict=strict)


@dataclass
class RunData:
    """The labeled training pool, the test set (None when the user gave no test data), and
    how many of the pool's last images ``extra_labeled`` added (always in the labeled split)."""

    train: ImageSet
    test: ImageSet | None
    extra_labeled: int = 0


def load_run_data(settings: SharedSettings, image_size: int) -> RunData:
    """The data the settings name; your own images are stored at ``image_size``."""
    return RunData(*load_train_and_test(settings, image_size))
