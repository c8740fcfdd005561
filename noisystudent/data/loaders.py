"""Batches for the training loop and for inference, straight from uint8 image rows.

Slicing one tensor is far cheaper than collating samples through a DataLoader, and a
per-(seed, epoch) permutation makes the order reproducible across resumes. The rows come from
an in-memory tensor or, for unlabeled sets larger than memory, a ``.npy`` file read a batch at
a time (``data/arrays.py``). On a GPU a set that fits is moved there once (Fashion-MNIST's
60,000 uint8 images are 47 MB) and each epoch's order with it, so a step copies nothing from
the host.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from noisystudent.core import distributed

from .arrays import Images, rows_of


class LabelRows(Protocol):
    """What a loader needs of soft labels: rows indexed a batch at a time, moved to a device,
    and their size (``labels.store.SoftTargets``, which the data layer does not import)."""

    nbytes: int

    def __len__(self) -> int: ...

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> LabelRows: ...


# Class indices, or soft-label rows.
Labels = torch.Tensor | LabelRows


class ImageBatches:
    """Batches of ``images`` and their ``labels`` (class indices, or soft-label rows).

    ``shuffle``: a fresh permutation per epoch, seeded by (seed, epoch); ``steps`` > 0 fixes
    the number of batches per epoch whatever the set's size (more than one pass if needed).
    Under DDP (``set_shard``) every rank draws the same global batch and keeps its slice.
    """

    def __init__(self, images: Images, labels: Labels, batch_size: int,
                 device: torch.device, *, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, steps: int = 0):
        if resident_fits(images, labels, device):
            images, labels = images.to(device), labels.to(device)
        self.images, self.labels = images, labels
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.drop_last, self.seed, self.steps = shuffle, drop_last, seed, steps
        self.epoch = 0
        self.rank, self.world = 0, 1
        if drop_last and len(images) < batch_size:
            self.batch_size = len(images)  # a tiny labeled set still yields one batch

    @classmethod
    def training(cls, images: Images, labels: Labels, batch_size: int,
                 device: torch.device, *, seed: int, steps: int = 0) -> ImageBatches:
        """Shuffled full batches, as every training stage draws them."""
        return cls(images, labels, batch_size, device, shuffle=True, drop_last=True, seed=seed,
                   steps=steps)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_shard(self, rank: int, world: int) -> None:
        distributed.check_divisible(self.batch_size)
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        if self.steps:
            return self.steps
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self) -> torch.Tensor | None:
        """This epoch's row order: enough shuffled passes to fill ``len(self)`` batches (None
        in order, one pass: the rows in turn, with no N-long index held)."""
        n = len(self.images)
        # More than one pass only when ``steps`` asks for more batches than the set fills.
        passes = max(1, math.ceil(len(self) * self.batch_size / n)) if self.steps else 1
        if not self.shuffle:
            return torch.arange(n).repeat(passes) if passes > 1 else None
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.cat([torch.randperm(n, generator=gen) for _ in range(passes)])

    def __iter__(self):
        order = self.order()
        where = self.images.device if isinstance(self.images, torch.Tensor) else None
        if order is not None:
            order = order.to(where)  # once per epoch, not once per step
        for b in range(len(self)):
            start = b * self.batch_size
            idx = order[start:start + self.batch_size] if order is not None else torch.arange(
                start, min(start + self.batch_size, len(self.images)), device=where)
            idx = idx.tensor_split(self.world)[self.rank]
            yield {
                "images": rows_of(self.images, idx).to(self.device, non_blocking=True),
                "labels": self.labels[idx].to(self.device, non_blocking=True),
                "index": idx,
            }


# Share of the free GPU memory a resident set may take; the rest is for the model.
RESIDENT_SHARE = 0.25


def resident_fits(images: Images, labels: Labels, device: torch.device) -> bool:
    """Whether to keep the set on ``device``: an in-memory set on a GPU with room for it."""
    if device.type != "cuda" or not isinstance(images, torch.Tensor) or \
            images.device == device:
        return False
    size = images.nbytes + labels.nbytes  # labels: class indices, or soft-label rows
    free, _ = torch.cuda.mem_get_info(device)
    return size <= RESIDENT_SHARE * free


class _Together:
    """Several ImageBatches stepped together (same number of batches, epoch and shard)."""

    def __init__(self, *parts: ImageBatches):
        if len({len(p) for p in parts}) != 1:
            raise ValueError("all batch sources must yield the same number of steps")
        self.parts = parts

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.set_epoch(epoch)

    def set_shard(self, rank: int, world: int) -> None:
        for part in self.parts:
            part.set_shard(rank, world)

    def __len__(self) -> int:
        return len(self.parts[0])


class LabeledAndPseudoBatches(_Together):
    """Each step: a labeled batch and a larger pseudo-labeled batch, drawn independently
    (Noisy Student's student)."""

    def __init__(self, labeled: ImageBatches, pseudo: ImageBatches):
        super().__init__(labeled, pseudo)

    def __iter__(self):
        for labeled, pseudo in zip(*self.parts):
            yield {"images": labeled["images"], "labels": labeled["labels"],
                   "pseudo_images": pseudo["images"], "pseudo_probs": pseudo["labels"],
                   "num_images": len(labeled["images"]) + len(pseudo["images"])}


class ConcatenatedBatches(_Together):
    """Each step: one batch from every source, concatenated (labeled + unlabeled images,
    the unlabeled ones carrying the label -1)."""

    def __iter__(self):
        for batches in zip(*self.parts):
            yield {"images": torch.cat([b["images"] for b in batches]),
                   "labels": torch.cat([b["labels"] for b in batches])}
