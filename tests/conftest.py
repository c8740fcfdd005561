"""Shared fixtures: a tiny labeled image tree cut from Fashion-MNIST, and quick settings."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisystudent.core.config import TrainConfig
from noisystudent.core.errors import UserError
from noisystudent.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist


def fashion_mnist_available() -> bool:
    try:
        find_fashion_mnist(download=False)
        return True
    except UserError:
        return False


needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST not found (make data, or apt-get install dataset-fashion-mnist)")


def write_image_tree(root: Path, split: str, per_class: int, classes: int = 3) -> Path:
    """root/<class>/<i>.png with real Fashion-MNIST images (RGB, 28x28)."""
    images = load_fashion_mnist(split)
    for c in range(classes):
        folder = root / images.classes[c].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        picks = np.flatnonzero(images.labels.numpy() == c)[:per_class]
        for i in picks:
            Image.fromarray(images.images[i, 0].numpy()).convert("RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> tuple[Path, Path]:
    """A small labeled ImageFolder train tree and a test tree."""
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not found")
    base = tmp_path_factory.mktemp("tree")
    return write_image_tree(base / "train", "train", 12), write_image_tree(base / "test", "test", 8)


def quick_config(**overrides) -> TrainConfig:
    """A smoke-test budget: a tiny model, few images, one epoch, no pretrained download."""
    settings = dict(model="resnet10t", pretrained="none", labels_per_class=4, epochs=1,
                    batch_size=8, image_size=32, drop_path_rate=0.0, eval_batch_size=512)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A finished one-epoch Fashion-MNIST run with dropout (so eval mode matters)."""
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not found")
    from noisystudent.stages.train import train

    run = tmp_path_factory.mktemp("teacher") / "run"
    train(quick_config(labels_per_class=3, drop_rate=0.5), run, quiet=True)
    return run


def interrupt_on_call(function, call: int):
    """A stand-in for ``function`` that raises KeyboardInterrupt on its ``call``-th call, as a
    user's Ctrl-C would, and otherwise runs the real thing."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return function(*args, **kwargs)

    return wrapper


def without_package(monkeypatch, prefix: str) -> None:
    """Imports of ``prefix`` (and its submodules) fail from now on, as where the package is not
    installed."""
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.startswith(prefix):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
