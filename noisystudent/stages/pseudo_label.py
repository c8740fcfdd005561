"""``noisystudent pseudo-label``: a clean teacher labels the unlabeled images.

As the official Noisy Student does it: the teacher in eval mode (no dropout, no stochastic
depth, batch norm in inference; EMA weights where the run has them, as those are what it saved)
sees clean views; soft labels softmax(logits / T) or one-hot; images below a confidence
threshold are dropped; each predicted class is brought to N images (the most confident N of a
full class, whole copies plus a random fraction of a rare one).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from noisystudent.core import distributed, runs, timings
from noisystudent.core.config import PseudoLabelConfig
from noisystudent.core.device import resolve_device, resolve_precision
from noisystudent.core.errors import UserError
from noisystudent.core.settings_io import to_dict
from noisystudent.data.imageset import ImageSet
from noisystudent.data.loaders import ImageBatches
from noisystudent.data.shards import StreamedSource, labeling_batches, shard_of
from noisystudent.data.unlabeled import Unlabeled, first, teacher_run_unlabeled
from noisystudent.deploy.labeling import OnnxLabeler, iter_onnx_logits
from noisystudent.deploy.labeling import usable as onnx_usable
from noisystudent.labels.directory import SUMMARY, remove_parts, selection_parts, stored_bytes
from noisystudent.labels.selected_shards import write_selected_shard
from noisystudent.labels.selection import Part, StreamedSelection
from noisystudent.labels.store import (
    SELECTED_SHARDS,
    LabelWriter,
    ShardLabelWriter,
    label_parts,
    reduce_logits,
    resolve_top_k,
    selected_part,
)
from noisystudent.labels.to_label import write_to_label
from noisystudent.models.inference import iter_logits
from noisystudent.models.saved import TrainedModel, load_trained
from noisystudent.models.transforms import CleanPipeline


def pseudo_label(teacher_run: str | Path, out: str | Path,
                 config: PseudoLabelConfig | None = None, *, unlabeled: str | None = None,
                 images: tuple[Unlabeled, str] | None = None, quiet: bool = False) -> dict:
    """Label the unlabeled images with the teacher; writes the label and selected parts (and,
    for streamed shards or folders, the selected images as tar shards) and summary.json in ``out``.

    The images: ``images`` (the set and where it comes from) when the caller holds them,
    else the shards, folder or .npy ``unlabeled``, else the teacher run's unlabeled split.
    Everything streams: each rank labels a contiguous share and appends each batch's reduced
    outputs to its part files; selection reads them back, with only per-class histograms
    summed over the ranks; so memory does not grow with the number of images."""
    config = config or PseudoLabelConfig()
    out = Path(out)
    if (out / SUMMARY).is_file():
        raise UserError(f"{out} already holds pseudo-labels; choose another --out")
    if distributed.is_main():  # parts of an unfinished pass (maybe more ranks) are stale
        remove_parts(out)
        runs.remove_stale_temporaries(out)  # a part being written when that pass was killed
    distributed.barrier()  # nobody writes a part before everyone has checked
    device = resolve_device(config.device)
    teacher = load_trained(teacher_run, device)
    images, source = images or teacher_run_unlabeled(teacher.run_dir, unlabeled,
                                                      config.max_images)
    streamed = isinstance(images, StreamedSource)
    if not streamed:
        images = first(images, config.max_images)
        if len(images) == 0:
            raise UserError(f"no unlabeled images in {source}")
    num_classes = len(teacher.classes)
    top_k = resolve_top_k(config.top_k, num_classes, config.soft)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Label: every batch is reduced to what selection and the student need, and appended.
    started = time.perf_counter()  # the export of an ONNX Runtime labeling included
    labeling = Labeling(teacher, config, top_k, device, quiet=quiet,
                        images=image_count(images) if streamed else len(images))
    labeling.label(images, out)
    distributed.barrier()  # the slowest rank's time is the pass's time
    seconds = time.perf_counter() - started
    counts = labeling.counts.total()
    if streamed and counts.images == 0:
        raise UserError(f"no readable image in {source} ({int(counts.skipped)} skipped)")

    # 2. Select: the official rule, streamed over the parts (labels/selection.py).
    selection = StreamedSelection(
        lambda: selection_parts(out, distributed.rank()), num_classes,
        threshold=config.threshold, balance=config.balance, per_class=config.per_class,
        seed=config.seed, all_reduce=distributed.all_reduce_sum,
        exclusive_prefix=distributed.exclusive_prefix)
    if selection.above == 0:
        highest = float(distributed.gather_rows(labeling.highest[None]).max())
        raise UserError(f"no image reached the confidence threshold {config.threshold} "
                        f"(highest {highest:.3f}); lower --threshold")

    # 3. Write each part's copies beside it (and the selected images of a shard), and count.
    selected, shard_sizes = write_selected(out, selection, images, num_classes)
    distributed.barrier()  # every part is on disk before the summary marks the pass done
    to_label = write_to_label(out, selection_parts(out, None), images, teacher.classes,
                              config.to_label) if config.to_label and distributed.is_main() else 0
    labeled, correct, known, skipped = (int(counts.images), int(counts.correct),
                                        int(counts.known), int(counts.skipped))
    summary = summarize(selected.total(), teacher=teacher, source=source, unlabeled=unlabeled,
                        config=config, images=labeled, above=selection.above,
                        per_class=selection.per_class, top_k=top_k,
                        accuracy=correct / known if known == labeled else None)
    summary.update(processes=distributed.world_size(), labeling_seconds=seconds,
                   runtime="onnxruntime" if labeling.onnx else "torch",
                   images_per_s=labeled / max(seconds, 1e-9), skipped=skipped,
                   to_label=to_label,
                   stored_bytes=stored_bytes(out))
    if streamed:
        summary["selected_shards"] = dict(sorted(distributed.merge_dicts(shard_sizes).items()))
    runs.write_json(out / SUMMARY, summary)
    distributed.barrier()
    return summary


def image_count(source: StreamedSource) -> int:
    """The images of a folder's shards (lists of files); a tar or a dataset is counted only
    as it is read: taken as large."""
    if all(isinstance(shard, tuple) for shard in source.shards):
        return sum(len(shard) for shard in source.shards)
    return sys.maxsize


def write_selected(out: Path, selection: StreamedSelection, images,
                   num_classes: int) -> tuple[SelectedCounts, dict[str, int]]:
    """Each of this rank's label parts gets the copies selection chose beside it (and, for
    streamed images, the selected images of its shard as a tar shard); returns the counts of
    what was selected and each written shard's size."""
    streamed = isinstance(images, StreamedSource)
    selected = SelectedCounts.zeros(num_classes)
    shard_sizes: dict[str, int] = {}
    for path, (part, copies) in zip(label_parts(out, distributed.rank()),
                                    selection.chosen_copies()):
        runs.save_weights(selected_part(path), {"copies": copies}, every_rank=True)
        if streamed:
            shard = shard_of(part.start)
            name = SELECTED_SHARDS.name(distributed.rank(), shard)
            if write_selected_shard(out / name, images, shard, part.stored, copies):
                shard_sizes[name] = (out / name).stat().st_size
            selected.add(copies, part, torch.full((len(copies),), -1))
        else:
            selected.add(copies, part, images.labels[part.start:part.start + len(copies)])
    return selected, shard_sizes


class Labeling:
    """Step 1 for either kind of source: the clean teacher over every batch, each batch's
    reduced outputs appended to this rank's parts, and the counts (``LabelingCounts``) and
    highest confidence seen on the way."""

    def __init__(self, teacher: TrainedModel, config: PseudoLabelConfig, top_k: int,
                 device: torch.device, *, quiet: bool, images: int):
        self.teacher, self.config, self.top_k, self.device = teacher, config, top_k, device
        self.progress = not quiet and distributed.is_main()
        self.counts = LabelingCounts()
        self.highest = torch.zeros((), dtype=torch.float64)
        self.dtype = resolve_precision(config.precision, device, training=False)
        self.onnx = OnnxLabeler(teacher.run_dir) if onnx_usable(
            config.runtime, device, images * (2 if config.flip else 1), self.dtype) else None

    def label(self, images: ImageSet | StreamedSource, out: Path) -> None:
        try:
            if isinstance(images, StreamedSource):
                self.label_shards(images, out)
            else:
                self.label_rows(images, out)
        finally:
            if self.onnx is not None:
                self.onnx.close()  # the exported teacher's folder

    def _torch_logits(self, batches: Iterable[dict], progress: bool = False):
        return iter_logits(
            self.teacher.model, CleanPipeline(self.teacher.spec), batches, device=self.device,
            dtype=self.dtype, progress=progress, flip=self.config.flip,
            description="pseudo-label" + timings.time_left())

    def _logits(self, batches: Iterable[dict]) -> Iterator[tuple[dict, dict[str, torch.Tensor]]]:
        if self.onnx is None:
            labeled = self._torch_logits(batches, self.progress)
        else:  # the model's own flip averaging (airbench) is inside its graph
            labeled = iter_onnx_logits(
                self.onnx, lambda batch: next(self._torch_logits([batch]))[1], batches,
                flip=self.config.flip and not getattr(self.teacher.model, "flip_tta", False),
                progress=self.progress, description="pseudo-label" + timings.time_left())
        for batch, logits in labeled:
            stored = reduce_logits(logits, temperature=self.config.temperature,
                                   soft=self.config.soft, top_k=self.top_k)
            self.counts.images += len(logits)
            self.highest = torch.maximum(self.highest, stored["confidence"].max().double())
            yield batch, stored

    def label_rows(self, images: ImageSet, out: Path) -> None:
        """An in-memory set or .npy: this rank's contiguous rows, parts of PART_BYTES."""
        start, stop = distributed.my_share(len(images))
        loader = ImageBatches(images.images[start:stop], images.labels[start:stop],
                              self.config.batch_size, self.device)
        writer = LabelWriter(out, distributed.rank(), start)
        for batch, stored in self._logits(loader):
            writer.append(stored)
            labels = batch["labels"].cpu()
            self.counts.correct += float((stored["predicted"].long() == labels).sum())
            self.counts.known += float((labels >= 0).sum())
        writer.close()

    def label_shards(self, source: StreamedSource, out: Path) -> None:
        """Tar shards or a folder: this rank's contiguous block of shards, decoded in loader
        workers; one part per shard."""
        start, stop = distributed.my_share(len(source.shards))
        writer = ShardLabelWriter(out, distributed.rank())
        skipped: list[str] = []

        def readable(batches: Iterable[dict]) -> Iterator[dict]:
            for batch in batches:
                if batch["skipped"] and source.strict:
                    raise UserError(f"unreadable image {batch['skipped'][0]}; fix or remove "
                                    "it, or drop --strict to skip it")
                skipped.extend(batch["skipped"])
                if len(batch["images"]):
                    yield batch
                elif batch["end"]:
                    writer.finish(batch["shard"])

        loader = labeling_batches(source, range(start, stop), self.config.batch_size,
                                  self.config.workers)
        for batch, stored in self._logits(readable(loader)):
            writer.append(batch["shard"], batch["position"], stored)
            if batch["end"]:
                writer.finish(batch["shard"])
        self.counts.skipped.fill_(len(skipped))
        if skipped:
            names = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more"
                                              if len(skipped) > 5 else "")
            warnings.warn(f"skipped {len(skipped)} unreadable images: {names}", stacklevel=2)


def _zero() -> torch.Tensor:
    return torch.zeros((), dtype=torch.float64)


@dataclass
class LabelingCounts:
    """Step 1's counts on this rank, in float64 (exact sums over any number of ranks): images
    labeled, those with a known true label (a split of labeled data), those of them the
    teacher got right, and the unreadable ones skipped."""

    images: torch.Tensor = field(default_factory=_zero)
    correct: torch.Tensor = field(default_factory=_zero)
    known: torch.Tensor = field(default_factory=_zero)
    skipped: torch.Tensor = field(default_factory=_zero)

    def total(self) -> LabelingCounts:
        """The counts summed over the ranks."""
        summed = distributed.all_reduce_sum(
            torch.stack([self.images, self.correct, self.known, self.skipped]))
        return LabelingCounts(*summed)


@dataclass
class SelectedCounts:
    """Totals over the selected images, summed over the parts and then the ranks: the count
    of each predicted class and in all (copies counted), the distinct images selected, those of
    them the teacher got right (where the truth is known), and their confidences' sum."""

    per_class: torch.Tensor
    selected: torch.Tensor = field(default_factory=_zero)
    unique: torch.Tensor = field(default_factory=_zero)
    correct: torch.Tensor = field(default_factory=_zero)
    confidence: torch.Tensor = field(default_factory=_zero)

    @classmethod
    def zeros(cls, num_classes: int) -> SelectedCounts:
        return cls(torch.zeros(num_classes, dtype=torch.float64))

    def add(self, copies: torch.Tensor, part: Part, truth: torch.Tensor) -> None:
        copies = copies.double()
        chosen = copies > 0
        predicted = part.predicted
        self.selected += copies.sum()
        self.unique += chosen.sum()
        self.correct += (chosen & (predicted == truth)).sum()
        self.confidence += (part.confidence.double() * copies).sum()
        self.per_class += torch.bincount(predicted, copies, minlength=len(self.per_class))

    def total(self) -> SelectedCounts:
        """The counts summed over the ranks."""
        scalars = torch.stack([self.selected, self.unique, self.correct, self.confidence])
        summed = distributed.all_reduce_sum(torch.cat([scalars, self.per_class]))
        return SelectedCounts(summed[4:], *summed[:4])


def summarize(counts: SelectedCounts, *, teacher: TrainedModel, source: str,
              unlabeled: str | None, config: PseudoLabelConfig, images: int, above: int,
              per_class: int | None, top_k: int, accuracy: float | None) -> dict:
    selected, unique, correct, confidence = (float(v) for v in (
        counts.selected, counts.unique, counts.correct, counts.confidence))
    return {
        "teacher": {"run": str(teacher.run_dir), "model": teacher.info["model"]},
        "unlabeled_source": source,
        "unlabeled_folder": unlabeled,
        "max_images": config.max_images,
        "classes": teacher.classes,
        "unlabeled_images": images,
        "above_threshold": above,
        "selected": int(selected),
        "unique_selected": int(unique),
        "per_class": per_class,
        "top_k": top_k,
        "count_per_class": {c: int(n) for c, n in zip(teacher.classes,
                                                      counts.per_class.tolist())},
        "mean_confidence": confidence / selected if selected else None,
        "settings": to_dict(config),
        # True labels are known only when the unlabeled set is a split of labeled data; they
        # measure the teacher and are never used for training.
        "pseudo_label_accuracy": accuracy,
        "selected_accuracy": correct / unique if accuracy is not None and unique else None,
    }
