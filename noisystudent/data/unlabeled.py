"""The unlabeled images a teacher labels, found and loaded the same way by every command that
needs them: ``pseudo-label`` (a teacher run's), ``self-train`` (its config's, once for every
iteration) and ``review`` (a finished run's, loaded again for its pictures).

They are tar shards, a folder of images or a Hugging Face dataset, streamed and decoded in
loader workers (``shards.py``); a packed ``.npy`` read from disk a batch at a time
(``arrays.py``); or, by default, the part of the labeled pool the teacher's split left
unlabeled, whose hidden true labels measure pseudo-label accuracy.
"""

from __future__ import annotations

from pathlib import Path

from noisystudent.core import runs
from noisystudent.core.config import SelfTrainConfig, shared_settings_of
from noisystudent.core.errors import UserError
from noisystudent.core.layout import SelfTrainLayout

from .images import load_npy_images
from .imageset import ImageSet
from .shards import StreamedSource, open_source, spread
from .sources import RunData, load_run_data, load_train_and_test
from .splits import load_split

Unlabeled = ImageSet | StreamedSource


def load_unlabeled(path: str, size: int, channels: int, strict: bool,
                   max_images: int = 0, *, image_column: str | None = None
                   ) -> tuple[Unlabeled, str]:
    """Unlabeled images and a description of where they come from: tar shards, a folder of
    images or a Hugging Face dataset (its ``image_column``, else found), streamed and decoded
    at ``size`` in loader workers (``data/shards.py``); or a packed .npy read from disk a
    batch at a time (which must hold images of that size)."""
    if not str(path).endswith(".npy"):
        source = open_source(path, size, channels, strict, max_images,
                             image_column=image_column)
        return source, source.description
    images = load_npy_images(path)  # read from disk a batch at a time
    if images.images.image_shape != (channels, size, size):
        raise UserError(f"{path} holds images of shape {images.images.image_shape}, "
                        f"expected {(channels, size, size)}; pack it with --image-size "
                        f"{size} --channels {channels}")
    return first(images, max_images), f"array {path}"


def teacher_run_unlabeled(run_dir: str | Path, folder: str | None = None,
                          max_images: int = 0) -> tuple[Unlabeled, str]:
    """The images a teacher run labels, and where they come from: tar shards, a folder or a
    .npy (at the teacher's stored size), or by default the run's unlabeled split."""
    run = runs.require_run(run_dir, runs.CONFIG, runs.MODEL_INFO)
    cfg, info = runs.read_yaml(run / runs.CONFIG), runs.read_json(run / runs.MODEL_INFO)
    if folder:
        return load_unlabeled(folder, info["stored_size"], info["stored_channels"],
                              cfg["strict"], max_images, image_column=cfg.get("image_column"))
    if not (run / runs.SPLITS).is_file():
        raise UserError(f"{run} has no {runs.SPLITS}; pass --unlabeled FOLDER")
    train_set, _, _ = load_train_and_test(shared_settings_of(cfg), cfg["image_size"])
    return unlabeled_split(train_set, run, cfg["data"], max_images)


def self_train_unlabeled(config: SelfTrainConfig, data: RunData,
                         teacher: Path) -> tuple[Unlabeled, str]:
    """The images every iteration of a self-training run labels, and where they come from:
    the configured shards, folder or .npy, else the part of the labeled pool the first
    teacher's split left unlabeled."""
    max_images = config.pseudo_label_config().max_images
    if config.unlabeled:
        return load_unlabeled(config.unlabeled, data.train.images.shape[-1],
                              data.train.channels, config.strict, max_images,
                              image_column=config.image_column)
    return unlabeled_split(data.train, teacher, config.data, max_images)


def self_train_images(config: SelfTrainConfig, layout: SelfTrainLayout
                      ) -> tuple[Unlabeled, ImageSet | None]:
    """The unlabeled images and the test set a finished self-training run's loop held,
    loaded again."""
    data = load_run_data(config, stored_size(config))
    return self_train_unlabeled(config, data, layout.teacher)[0], data.test


def stored_size(config: SelfTrainConfig) -> int:
    """One size to store a self-training run's own images at: the largest any stage's model
    sees (each model resizes to its own in its input pipeline, so labeled and unlabeled
    batches always match)."""
    sizes = [config.student_config(k, "pending").image_size
             for k in range(1, config.iterations + 1)]
    if config.teacher_run:
        sizes.append(runs.read_json(Path(config.teacher_run) / runs.MODEL_INFO)["stored_size"])
    else:
        sizes.append(config.teacher_config().image_size)
    return max(sizes)


def unlabeled_split(train_set: ImageSet, run: Path, data: str,
                    max_images: int = 0) -> tuple[ImageSet, str]:
    """The images of a run's labeled pool that its split left unlabeled."""
    unlabeled = train_set.subset(load_split(run / runs.SPLITS)["unlabeled"])
    return first(unlabeled, max_images), f"unlabeled split of {data} ({run / runs.SPLITS})"


def first(images: ImageSet, count: int) -> ImageSet:
    """``count`` images spread evenly over the set (all when 0), so that a pile sorted by
    class gives each class its share; a streamed set stays a lazy view."""
    if not 0 < count < len(images):
        return images
    return images.subset(spread(len(images), count))
