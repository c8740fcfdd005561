"""The selected streamed images rewritten as tar shards, and the student's stream over them.

As the official code rewrites its TFRecords: once selection has chosen, a last pass over each
source shard copies every selected image's encoded bytes, untouched, into
``selected-RANK-SHARD.tar`` beside a ``.json`` member holding its index, its copies and its
soft label (the stored top-k classes and fp16 probabilities). The student streams those
shards: a fresh seeded shard order every pass, split over ranks and loader workers; each image
repeated as often as it was selected, through webdataset's shuffle buffer (``shuffle_buffer``
encoded images per worker), then decoded in the worker at the student's size. Nothing N-long
is held anywhere.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from webdataset import TarWriter
from webdataset.filters import shuffle
from webdataset.tariterators import tarfile_samples

from noisystudent.core import distributed, runs
from noisystudent.core.errors import CorruptFile
from noisystudent.data.decode import UnreadableImage, decode_image
from noisystudent.data.shards import IMAGE_KEYS, StreamedSource, image_index

from .store import SELECTED_SHARDS, SoftTargets


def selected_shards(directory: Path) -> list[Path]:
    return SELECTED_SHARDS.find(directory)


def write_selected_shard(path: Path, source: StreamedSource, shard: int,
                         labels: dict[str, torch.Tensor], copies: torch.Tensor) -> int:
    """Rewrite shard ``shard``'s selected images into the tar ``path`` (atomically); returns how
    many distinct images it holds (none: no file is written)."""
    chosen = torch.nonzero(copies > 0).flatten()
    if len(chosen) == 0:
        return 0
    row_of = dict(zip(labels["position"][chosen].tolist(), chosen.tolist()))
    probs, classes = labels["probs"], labels.get("classes")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as stream, TarWriter(stream, encoder=False, mtime=0) as tar:
            for sample in source.samples(shard):
                row = row_of.get(sample.position)
                if row is None:
                    continue
                label = {"index": image_index(shard, sample.position), "name": sample.name,
                         "copies": int(copies[row]), "probs": probs[row].float().tolist()}
                if classes is not None:
                    label["classes"] = classes[row].tolist()
                tar.write({"__key__": f"{sample.position:09d}", sample.extension: sample.data,
                           "json": json.dumps(label).encode()})

    runs.atomic_write(path, write, every_rank=True)
    return len(chosen)


class SelectedStream(torch.utils.data.IterableDataset):
    """Endless batches of selected images and their dense soft labels for one rank: each loader
    worker reads its slot's shards (or, with fewer shards than slots, every slot-th sample),
    pass after pass, in an order seeded by (seed, epoch, pass)."""

    def __init__(self, shards: list[Path], *, num_classes: int, size: int, channels: int,
                 batch_size: int, temperature: float, seed: int, buffer: int):
        self.shards, self.num_classes = [str(s) for s in shards], num_classes
        self.size, self.channels, self.batch_size = size, channels, batch_size
        self.temperature, self.seed, self.buffer = temperature, seed, buffer
        self.epoch, self.rank, self.world = 0, 0, 1

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        slots, slot = self.world * workers, self.rank * workers + worker
        rng = random.Random(f"{self.seed}-{self.epoch}-{slot}")
        samples = shuffle(self.buffer, self.buffer, rng=rng)(self._samples(slots, slot))
        batch = []
        for image, label in samples:
            try:
                batch.append((self._decode(image), label))
            except UnreadableImage:
                continue  # read once already by the teacher: only a file changed since
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []

    def _samples(self, slots: int, slot: int) -> Iterator[tuple[tuple[str, bytes], dict]]:
        for n in itertools.count():
            order = list(self.shards)
            random.Random(f"{self.seed}-{self.epoch}-pass{n}").shuffle(order)
            by_shard = len(order) >= slots
            mine = order[slot::slots] if by_shard else order
            ordinal = 0
            for shard in mine:
                for sample in tarfile_samples([{"url": shard}]):
                    ordinal += 1
                    if not by_shard and ordinal % slots != slot:
                        continue
                    label = json.loads(sample["json"])
                    key = next(k for k in IMAGE_KEYS if k in sample)
                    for _ in range(label["copies"]):
                        yield (key, sample[key]), label

    def _decode(self, image: tuple[str, bytes]) -> np.ndarray:
        array = decode_image(io.BytesIO(image[1]), self.size, self.channels)
        return array.transpose(2, 0, 1)

    def _collate(self, batch: list[tuple[np.ndarray, dict]]) -> dict:
        labels = [label for _, label in batch]
        probs = torch.tensor([label["probs"] for label in labels], dtype=torch.float16)
        classes = torch.tensor([label["classes"] for label in labels]) \
            if "classes" in labels[0] else None
        targets = SoftTargets(probs, classes, self.num_classes, self.temperature)
        return {"images": torch.from_numpy(np.stack([image for image, _ in batch])),
                "labels": targets.dense()}


class SelectedShardBatches:
    """The pseudo-labeled side of a student step when the selected images are in tar shards:
    the same interface as ``ImageBatches`` (``steps`` batches an epoch, ``set_epoch``,
    ``set_shard``; ``batch_size`` is the global batch, each rank streams its share)."""

    def __init__(self, shards: list[Path], batch_size: int, device: torch.device, *,
                 num_classes: int, size: int, channels: int, temperature: float, seed: int,
                 steps: int, workers: int, buffer: int):
        self.stream = SelectedStream(shards, num_classes=num_classes, size=size,
                                     channels=channels, batch_size=batch_size,
                                     temperature=temperature, seed=seed, buffer=buffer)
        self.batch_size, self.device = batch_size, device
        self.steps, self.workers = steps, workers

    def set_epoch(self, epoch: int) -> None:
        self.stream.epoch = epoch

    def set_shard(self, rank: int, world: int) -> None:
        distributed.check_divisible(self.batch_size)
        self.stream.rank, self.stream.world = rank, world
        self.stream.batch_size = self.batch_size // world

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict]:
        loader = torch.utils.data.DataLoader(self.stream, batch_size=None,
                                             num_workers=self.workers)
        for batch in itertools.islice(loader, self.steps):
            yield {"images": batch["images"].to(self.device, non_blocking=True),
                   "labels": batch["labels"].to(self.device, non_blocking=True)}


def check_selected_shards(directory: Path, sizes: dict[str, int]) -> None:
    """Every selected shard the summary lists is there whole (its recorded size): a torn or lost
    shard is a one-line error rather than a shorter student."""
    for name, size in sizes.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            raise CorruptFile(f"{path} is missing or not the size recorded in summary.json; "
                              "label again")
        try:
            with tarfile.open(path):
                pass
        except tarfile.TarError as err:
            raise CorruptFile(f"{path} is not a readable tar ({err}); label again") from None
