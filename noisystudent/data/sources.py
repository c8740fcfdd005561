"""Which images a run trains and tests on: Fashion-MNIST or the user's own labeled data."""

from __future__ import annotations

from pathlib import Path

from ..config import SharedSettings
from ..errors import UserError
from .fashion_mnist import load_fashion_mnist
from .images import load_image_folder, load_manifest
from .imageset import ImageSet

FASHION_MNIST = "fashion-mnist"


def load_labeled(path: str | Path, size: int, channels: int, strict: bool,
                 classes: list[str] | None = None) -> ImageSet:
    """An ImageFolder tree (one folder per class) or a ``path,label`` CSV manifest."""
    path = Path(path)
    if path.is_dir():
        images = load_image_folder(path, size, channels=channels, strict=strict)
    elif path.is_file() and path.suffix.lower() == ".csv":
        images = load_manifest(path, size, channels=channels, strict=strict, classes=classes)
    elif not path.exists():
        raise UserError(f"data not found: {path} (give 'fashion-mnist', a folder or a .csv)")
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
                        classes=classes)


def load_train_and_test(settings: SharedSettings,
                        size: int) -> tuple[ImageSet, ImageSet | None]:
    """The labeled training pool and the test set (None when the user gave no test data)."""
    train = load_fashion_mnist("train", settings.data_dir) if settings.data == FASHION_MNIST \
        else load_labeled(settings.data, size, settings.channels, settings.strict)
    return train, load_test_set(settings, size, classes=train.classes)
