"""Which images a run trains and tests on: Fashion-MNIST or the user's own labeled data."""

from __future__ import annotations

from pathlib import Path

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


def load_test_set(data: str, size: int, channels: int, strict: bool,
                  data_dir: str | None = None, test_data: str | None = None,
                  classes: list[str] | None = None) -> ImageSet | None:
    """The test set alone (None when the user gave no test data)."""
    if data == FASHION_MNIST:
        return load_fashion_mnist("test", data_dir)
    if not test_data:
        return None
    return load_labeled(test_data, size, channels, strict, classes=classes)


def load_train_and_test(data: str, size: int, channels: int, strict: bool,
                        data_dir: str | None = None,
                        test_data: str | None = None) -> tuple[ImageSet, ImageSet | None]:
    """The labeled training pool and the test set (None when the user gave no test data)."""
    train = load_fashion_mnist("train", data_dir) if data == FASHION_MNIST \
        else load_labeled(data, size, channels, strict)
    return train, load_test_set(data, size, channels, strict, data_dir, test_data,
                                train.classes)
