"""``noisystudent pseudo-label``: a clean teacher labels the unlabeled images.

As the official Noisy Student does it: the teacher in eval mode (no dropout, no stochastic
depth, batch norm in inference; EMA weights when the run kept them, as those are what it saved)
sees clean views; soft labels softmax(logits / T) or one-hot; images below a confidence
threshold are dropped; each predicted class is brought to N images (the most confident N of a
full class, whole copies plus a random fraction of a rare one).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import distributed, runs
from .config import PseudoLabelConfig, shared_settings_of, to_dict
from .data.images import load_npy_images, load_unlabeled_folder
from .data.imageset import ImageSet
from .data.loaders import ImageBatches
from .data.sources import load_train_and_test
from .data.splits import load_split
from .device import resolve_device, resolve_precision
from .errors import UserError
from .inference import TrainedModel, load_trained, predict_logits
from .transforms import CleanPipeline

SUMMARY = "summary.json"
SHARD = "pseudo-{:05d}.safetensors"


def load_unlabeled(path: str, size: int, channels: int, strict: bool) -> tuple[ImageSet, str]:
    """A folder of unlabeled images (decoded at ``size``), or a packed .npy streamed from disk
    (which must hold images of that size); and a description of where they come from."""
    if str(path).endswith(".npy"):
        images = load_npy_images(path)  # streamed from disk: memory does not grow with N
        if images.images.image_shape != (channels, size, size):
            raise UserError(f"{path} holds images of shape {images.images.image_shape}, "
                            f"expected {(channels, size, size)}; pack it with --image-size "
                            f"{size} --channels {channels}")
        return images, f"array {path}"
    return load_unlabeled_folder(path, size, channels, strict), f"folder {path}"


def unlabeled_images(run_dir: str | Path, folder: str | None = None,
                     max_images: int = 0) -> tuple[ImageSet, str]:
    """The images a teacher run labels, and where they come from: a folder or .npy (at the
    teacher's stored size), or by default the run's unlabeled split (whose hidden true labels
    measure pseudo-label accuracy)."""
    run = runs.require_run(run_dir, runs.CONFIG, runs.MODEL_INFO)
    cfg, info = runs.read_yaml(run / runs.CONFIG), runs.read_json(run / runs.MODEL_INFO)
    if folder:
        images, source = load_unlabeled(folder, info["stored_size"], info["stored_channels"],
                                        cfg["strict"])
        return first(images, max_images), source
    if not (run / runs.SPLITS).is_file():
        raise UserError(f"{run} has no {runs.SPLITS}; pass --unlabeled FOLDER")
    train_set, _ = load_train_and_test(shared_settings_of(cfg), cfg["image_size"])
    return unlabeled_split(train_set, run, cfg["data"], max_images)


def unlabeled_split(train_set: ImageSet, run: Path, data: str,
                    max_images: int = 0) -> tuple[ImageSet, str]:
    """The images of a run's labeled pool that its split left unlabeled."""
    unlabeled = train_set.subset(load_split(run / runs.SPLITS)["unlabeled"])
    return first(unlabeled, max_images), f"unlabeled split of {data} ({run / runs.SPLITS})"


def first(images: ImageSet, count: int) -> ImageSet:
    """The first ``count`` images (all when 0)."""
    return images.subset(range(count)) if 0 < count < len(images) else images


def select_and_balance(confidence: torch.Tensor, predicted: torch.Tensor, num_classes: int, *,
                       threshold: float, per_class: int | None,
                       generator: torch.Generator) -> torch.Tensor:
    """Indices kept after the confidence threshold and, when per_class is given, balancing."""
    kept = torch.nonzero(confidence >= threshold).flatten()
    if per_class is None:
        return kept
    chosen = []
    for c in range(num_classes):
        members = kept[predicted[kept] == c]
        if len(members) == 0:
            continue
        members = members[confidence[members].argsort(descending=True, stable=True)]
        if len(members) >= per_class:
            chosen.append(members[:per_class])  # a full class keeps its most confident
        else:
            copies, remainder = divmod(per_class, len(members))
            extra = members[torch.randperm(len(members), generator=generator)[:remainder]]
            chosen.append(torch.cat([members.repeat(copies), extra]))
    return torch.cat(chosen).sort().values if chosen else kept[:0]


def pseudo_label(teacher_run: str | Path, out: str | Path,
                 config: PseudoLabelConfig | None = None, *, unlabeled: str | None = None,
                 images: tuple[ImageSet, str] | None = None, quiet: bool = False) -> dict:
    """Label the unlabeled images with the teacher; writes shards and summary.json in ``out``.

    The images: ``images`` (the set and where it comes from) when the caller holds them,
    else the folder or .npy ``unlabeled``, else the teacher run's unlabeled split."""
    config = config or PseudoLabelConfig()
    out = Path(out)
    if (out / SUMMARY).is_file():
        raise UserError(f"{out} already holds pseudo-labels; choose another --out")
    if distributed.is_main():  # shards of an unfinished pass (maybe more ranks) are stale
        for stale in out.glob("pseudo-*.safetensors"):
            stale.unlink()
    distributed.barrier()  # nobody writes a shard before everyone has checked
    device = resolve_device(config.device)
    teacher = load_trained(teacher_run, device)
    images, source = images or unlabeled_images(teacher_run, unlabeled, config.max_images)
    images = first(images, config.max_images)
    if len(images) == 0:
        raise UserError(f"no unlabeled images in {source}")
    # Under torchrun each rank labels a contiguous share; only the (confidence, class) pairs
    # are gathered, so every rank makes the same global selection and saves its own probs.
    start, stop = distributed.my_share(len(images))
    loader = ImageBatches(images.images[start:stop], images.labels[start:stop],
                          config.batch_size, device)
    started = time.perf_counter()
    logits = predict_logits(teacher.model, CleanPipeline(teacher.spec), loader, device=device,
                            dtype=resolve_precision(config.precision, device, training=False),
                            progress=not quiet and distributed.is_main(),
                            description="pseudo-label")
    distributed.barrier()  # the slowest rank's time is the pass's time
    seconds = time.perf_counter() - started
    num_classes = len(teacher.classes)
    my_confidence, my_predicted = logits.softmax(1).max(1)
    confidence = distributed.gather_rows(my_confidence)
    predicted = distributed.gather_rows(my_predicted)
    probs = (logits / config.temperature).softmax(1) if config.soft \
        else F.one_hot(my_predicted, num_classes).float()

    above = int((confidence >= config.threshold).sum())
    per_class = None
    if config.balance:
        per_class = config.per_class or max(1, round(above / num_classes))
    generator = torch.Generator().manual_seed(config.seed)
    index = select_and_balance(confidence, predicted, num_classes, threshold=config.threshold,
                               per_class=per_class, generator=generator)

    if len(index) == 0:
        raise UserError(f"no image reached the confidence threshold {config.threshold} "
                        f"(highest {float(confidence.max()):.3f}); lower --threshold")
    mine = index[(index >= start) & (index < stop)]
    runs.save_weights(out / SHARD.format(distributed.rank()),
                      {"index": mine.to(torch.int64), "probs": probs[mine - start].contiguous()},
                      every_rank=True)
    summary = summarize(index, confidence, predicted, images, teacher=teacher, source=source,
                        unlabeled=unlabeled, config=config, above=above, per_class=per_class)
    summary.update(processes=distributed.world_size(), labeling_seconds=seconds,
                   images_per_s=len(images) / max(seconds, 1e-9))
    distributed.barrier()  # every shard is on disk before the summary marks the pass done
    runs.write_json(out / SUMMARY, summary)
    distributed.barrier()
    return summary


def summarize(index, confidence, predicted, images: ImageSet, *, teacher: TrainedModel,
              source: str, unlabeled: str | None, config: PseudoLabelConfig, above: int,
              per_class: int | None) -> dict:
    classes = teacher.classes
    kept_pred = predicted[index]
    summary = {
        "teacher": {"run": str(teacher.run_dir), "model": teacher.info["model"]},
        "unlabeled_source": source,
        "unlabeled_folder": unlabeled,
        "max_images": config.max_images,
        "classes": classes,
        "unlabeled_images": len(images),
        "above_threshold": above,
        "kept": len(index),
        "unique_kept": int(index.unique().numel()),
        "per_class": per_class,
        "count_per_class": {c: int((kept_pred == i).sum()) for i, c in enumerate(classes)},
        "mean_confidence": float(confidence[index].mean()) if len(index) else None,
        "settings": to_dict(config),
        "pseudo_label_accuracy": None,
    }
    truth = images.labels
    if len(truth) and bool((truth >= 0).all()):
        # True labels are known only when the unlabeled set is a split of labeled data; they
        # measure the teacher and are never used for training.
        summary["pseudo_label_accuracy"] = float((predicted == truth).float().mean())
        unique = index.unique()
        summary["kept_accuracy"] = float((predicted[unique] == truth[unique]).float().mean()) \
            if len(unique) else None
    return summary


def pseudo_labels_complete(directory: str | Path) -> bool:
    """Finished (summary.json is written last) and every shard passes its checksum."""
    try:
        read_pseudo_labels(directory)
        return True
    except UserError:
        return False


def read_pseudo_labels(directory: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """All shards of a pseudo-label directory, in index order: (index, probs, summary)."""
    directory = runs.require_run(directory, SUMMARY)
    shards = sorted(directory.glob("pseudo-*.safetensors"))
    if not shards:
        raise UserError(f"{directory} has no pseudo-*.safetensors shards")
    parts = [runs.load_weights(p) for p in shards]  # checksums verified
    index = torch.cat([p["index"] for p in parts])
    probs = torch.cat([p["probs"] for p in parts])
    order = index.argsort(stable=True)
    return index[order], probs[order], runs.read_json(directory / SUMMARY)
