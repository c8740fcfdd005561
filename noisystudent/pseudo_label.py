"""``noisystudent pseudo-label``: a clean teacher labels the unlabeled images.

As the official Noisy Student does it: the teacher in eval mode (no dropout, no stochastic
depth, batch norm in inference; EMA weights when the run kept them, as those are what it saved)
sees clean views; soft labels softmax(logits / T) or one-hot; images below a confidence
threshold are dropped; each predicted class is brought to N images (the most confident N of a
full class, whole copies plus a random fraction of a rare one).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from . import distributed, runs
from .config import PseudoLabelConfig, shared_settings_of, to_dict
from .data.images import load_npy_images, load_unlabeled_folder
from .data.imageset import ImageSet
from .data.loaders import ImageBatches
from .data.sources import load_train_and_test
from .data.splits import load_split
from .device import resolve_device, resolve_precision
from .errors import UserError
from .inference import TrainedModel, iter_logits, load_trained, release_free_heap
from .selection import Part, StreamedSelection
from .soft_labels import (
    LabelWriter,
    SoftTargets,
    kept_part,
    label_parts,
    read_kept,
    reduce_logits,
    resolve_top_k,
)
from .transforms import CleanPipeline

SUMMARY = "summary.json"
LEGACY_SHARDS = "pseudo-*.safetensors"
STALE = (LEGACY_SHARDS, "labels-*.safetensors", "kept-*.safetensors")


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
    """The first ``count`` images (all when 0), sliced: a streamed set stays a lazy view."""
    if not 0 < count < len(images):
        return images
    paths = None if images.paths is None else images.paths[:count]
    return dataclasses.replace(images, images=images.images[:count],
                               labels=images.labels[:count], paths=paths)


def pseudo_label(teacher_run: str | Path, out: str | Path,
                 config: PseudoLabelConfig | None = None, *, unlabeled: str | None = None,
                 images: tuple[ImageSet, str] | None = None, quiet: bool = False) -> dict:
    """Label the unlabeled images with the teacher; writes the label and kept parts and
    summary.json in ``out``.

    The images: ``images`` (the set and where it comes from) when the caller holds them,
    else the folder or .npy ``unlabeled``, else the teacher run's unlabeled split.
    Everything streams: each rank labels a contiguous share and appends each batch's reduced
    outputs to its part files; selection reads them back, with only per-class histograms
    summed over the ranks; so memory does not grow with the number of images."""
    config = config or PseudoLabelConfig()
    out = Path(out)
    if (out / SUMMARY).is_file():
        raise UserError(f"{out} already holds pseudo-labels; choose another --out")
    if distributed.is_main():  # parts of an unfinished pass (maybe more ranks) are stale
        for pattern in STALE:
            for stale in out.glob(pattern):
                stale.unlink()
        runs.remove_stale_temporaries(out)  # a part being written when that pass was killed
    distributed.barrier()  # nobody writes a part before everyone has checked
    device = resolve_device(config.device)
    teacher = load_trained(teacher_run, device)
    images, source = images or unlabeled_images(teacher_run, unlabeled, config.max_images)
    images = first(images, config.max_images)
    if len(images) == 0:
        raise UserError(f"no unlabeled images in {source}")
    num_classes = len(teacher.classes)
    top_k = resolve_top_k(config.top_k, num_classes, config.soft)

    # 1. Label: every batch is reduced to what selection and the student need, and appended.
    start, stop = distributed.my_share(len(images))
    loader = ImageBatches(images.images[start:stop], images.labels[start:stop],
                          config.batch_size, device)
    out.mkdir(parents=True, exist_ok=True)
    writer = LabelWriter(out, distributed.rank(), start)
    truth = torch.zeros(3, dtype=torch.float64)  # correct, known, highest confidence
    started = time.perf_counter()
    for batch, logits in iter_logits(
            teacher.model, CleanPipeline(teacher.spec), loader, device=device,
            dtype=resolve_precision(config.precision, device, training=False),
            progress=not quiet and distributed.is_main(), description="pseudo-label"):
        stored = reduce_logits(logits, temperature=config.temperature, soft=config.soft,
                               top_k=top_k)
        writer.append(stored)
        labels = batch["labels"].cpu()
        truth[0] += float((stored["predicted"].long() == labels).sum())
        truth[1] += float((labels >= 0).sum())
        truth[2] = max(float(truth[2]), float(stored["confidence"].max()))
    writer.close()
    distributed.barrier()  # the slowest rank's time is the pass's time
    seconds = time.perf_counter() - started

    # 2. Select: the official rule, streamed over the parts (selection.py).
    selection = StreamedSelection(
        lambda: selection_parts(out, distributed.rank()), num_classes,
        threshold=config.threshold, balance=config.balance, per_class=config.per_class,
        seed=config.seed, all_reduce=distributed.all_reduce_sum,
        exclusive_prefix=distributed.exclusive_prefix)
    if selection.above == 0:
        highest = float(distributed.gather_rows(truth[2:]).max())
        raise UserError(f"no image reached the confidence threshold {config.threshold} "
                        f"(highest {highest:.3f}); lower --threshold")

    # 3. Write each part's copies beside it, and count what was kept.
    kept = KeptCounts(num_classes)
    for path, (part, copies) in zip(label_parts(out, distributed.rank()),
                                    selection.chosen_copies()):
        runs.save_weights(kept_part(path), {"copies": copies}, every_rank=True)
        kept.add(copies, part, images.labels[part.start:part.start + len(copies)])
    distributed.barrier()  # every part is on disk before the summary marks the pass done
    known = distributed.all_reduce_sum(truth[:2])
    summary = summarize(kept.total(), teacher=teacher, source=source, unlabeled=unlabeled,
                        config=config, images=len(images), above=selection.above,
                        per_class=selection.per_class, top_k=top_k,
                        accuracy=float(known[0] / known[1]) if known[1] == len(images)
                        else None)
    summary.update(processes=distributed.world_size(), labeling_seconds=seconds,
                   images_per_s=len(images) / max(seconds, 1e-9),
                   stored_bytes=sum(p.stat().st_size for pattern in STALE[1:]
                                    for p in out.glob(pattern)))
    runs.write_json(out / SUMMARY, summary)
    distributed.barrier()
    return summary


def selection_parts(directory: Path, rank: int) -> Iterator[Part]:
    for path in label_parts(directory, rank):
        stored = runs.load_weights(path)
        yield Part(int(stored["start"]), stored["confidence"], stored["predicted"].long())
        del stored
        release_free_heap()  # each part's temporaries are freed: keep the heap from growing


class KeptCounts:
    """Totals over the kept images, summed over the parts and then the ranks."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        # kept (with copies), unique, correct among unique, confidence sum, per class
        self.counts = torch.zeros(4 + num_classes, dtype=torch.float64)

    def add(self, copies: torch.Tensor, part: Part, truth: torch.Tensor) -> None:
        copies = copies.double()
        chosen = copies > 0
        predicted = part.predicted
        self.counts[0] += copies.sum()
        self.counts[1] += chosen.sum()
        self.counts[2] += (chosen & (predicted == truth)).sum()
        self.counts[3] += (part.confidence.double() * copies).sum()
        self.counts[4:] += torch.bincount(predicted, copies, minlength=self.num_classes)

    def total(self) -> torch.Tensor:
        return distributed.all_reduce_sum(self.counts)


def summarize(counts: torch.Tensor, *, teacher: TrainedModel, source: str,
              unlabeled: str | None, config: PseudoLabelConfig, images: int, above: int,
              per_class: int | None, top_k: int, accuracy: float | None) -> dict:
    kept, unique, correct, confidence = (float(v) for v in counts[:4])
    return {
        "teacher": {"run": str(teacher.run_dir), "model": teacher.info["model"]},
        "unlabeled_source": source,
        "unlabeled_folder": unlabeled,
        "max_images": config.max_images,
        "classes": teacher.classes,
        "unlabeled_images": images,
        "above_threshold": above,
        "kept": int(kept),
        "unique_kept": int(unique),
        "per_class": per_class,
        "top_k": top_k,
        "count_per_class": {c: int(n) for c, n in zip(teacher.classes, counts[4:].tolist())},
        "mean_confidence": confidence / kept if kept else None,
        "settings": to_dict(config),
        # True labels are known only when the unlabeled set is a split of labeled data; they
        # measure the teacher and are never used for training.
        "pseudo_label_accuracy": accuracy,
        "kept_accuracy": correct / unique if accuracy is not None and unique else None,
    }


def pseudo_labels_complete(directory: str | Path) -> bool:
    """Finished (summary.json is written last) and every part passes its checksum."""
    try:
        read_pseudo_labels(directory)
        return True
    except UserError:
        return False


def read_pseudo_labels(directory: str | Path,
                       temperature: float = 1.0) -> tuple[torch.Tensor, SoftTargets, dict]:
    """The kept images of a pseudo-label directory, in index order (an image repeated as
    often as it was kept), their soft labels at ``temperature``, and the summary."""
    directory = runs.require_run(directory, SUMMARY)
    summary = runs.read_json(directory / SUMMARY)
    num_classes = len(summary["classes"])
    if not label_parts(directory) and (legacy := sorted(directory.glob(LEGACY_SHARDS))):
        # Written before the labels streamed: each rank's kept indices and fp32 probabilities.
        parts = [runs.load_weights(p) for p in legacy]
        index = torch.cat([p["index"] for p in parts])
        probs = torch.cat([p["probs"] for p in parts])
        order = index.argsort(stable=True)
        return index[order], SoftTargets(probs[order], None, num_classes, temperature), summary
    index, targets = read_kept(directory, num_classes, temperature)
    return index, targets, summary
