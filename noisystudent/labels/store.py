"""The teacher's outputs as stored: reduced per batch, appended to a rank's part files.

Each image is reduced to its confidence (fp32, the softmax maximum at T = 1, which selection
ranks), its predicted class, and its soft label: the ``top_k`` most probable classes and their
probabilities at the labeling temperature, in fp16 (all classes when ``top_k`` covers them,
the default where there are at most 100 classes; hard labels are the top 1 at probability 1).
At 1,000 classes and ``top_k`` 10 that is 4 + 2 + 10 x (2 + 2) = 46 bytes an image, and
selection's copies 4 more, against 4,000 for fp32 probabilities over every class. Parts of about
``PART_BYTES`` are written as they fill (``labels-RANK-PART.safetensors``, ``LABEL_PARTS``), so
labeling holds one part in memory, whatever N. Selection writes each image's copies beside its
part (``selected-RANK-PART.safetensors``), and for streamed shards the selected images
themselves (``selected-RANK-SHARD.tar``, ``selected_shards.py``): ``PartFiles`` names all three.

A student reads the selected images' top-k rows and turns them into dense targets a batch at a
time (``SoftTargets``): the top-k probabilities renormalised to sum to 1. The mass outside the
top k is dropped rather than spread over the other classes: spread evenly it would teach the
student that the least likely classes are as likely as the k-th (and at 10 classes of 1,000 the
dropped mass is the teacher's least certain part).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from noisystudent.core import runs
from noisystudent.data.shards import image_index

PART_BYTES = 8 << 20  # a part in memory and on disk, whatever each image's row holds
FULL_UP_TO = 100  # classes up to which the default top_k keeps every class


@dataclass(frozen=True)
class PartFiles:
    """One kind of a rank's part files in a pseudo-label directory, ``KIND-RANK-PART.EXT``:
    rank and part (or shard) in five digits, ordered as numbers (shard 100000 follows 99999)."""

    kind: str
    suffix: str = ".safetensors"

    def name(self, rank: int, part: int) -> str:
        return f"{self.kind}-{rank:05d}-{part:05d}{self.suffix}"

    def pattern(self, rank: int | None = None) -> str:
        return f"{self.kind}-{'*' if rank is None else f'{rank:05d}'}-*{self.suffix}"

    def numbers(self, path: Path) -> tuple[int, int]:
        """(rank, part) of one of these files."""
        rank, part = path.name.removeprefix(f"{self.kind}-").removesuffix(self.suffix).split("-")
        return int(rank), int(part)

    def find(self, directory: Path, rank: int | None = None) -> list[Path]:
        """These files (of one rank, or all), in global index order: by rank, then part."""
        return sorted(Path(directory).glob(self.pattern(rank)), key=self.numbers)


LABEL_PARTS = PartFiles("labels")                # the teacher's outputs, reduced, a part at a time
SELECTED_COPIES = PartFiles("selected")          # selection's copies of each image of a label part
SELECTED_SHARDS = PartFiles("selected", ".tar")  # a streamed shard's selected images


def resolve_top_k(top_k: int, num_classes: int, soft: bool) -> int:
    """Classes stored per image: 1 for hard labels; 0 (the default) is every class up to
    FULL_UP_TO classes, else 10."""
    if not soft:
        return 1
    if top_k == 0:
        return num_classes if num_classes <= FULL_UP_TO else 10
    return min(top_k, num_classes)


def class_dtype(num_classes: int) -> torch.dtype:
    return torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32


def reduce_logits(logits: torch.Tensor, *, temperature: float, soft: bool,
                  top_k: int) -> dict[str, torch.Tensor]:
    """A batch of logits as stored: confidence, predicted class, and the top-k soft label
    (``classes`` is left out when every class is stored, in class order)."""
    logits = logits.float()
    num_classes = logits.shape[1]
    confidence, predicted = logits.softmax(1).max(1)
    stored = {"confidence": confidence, "predicted": predicted.to(class_dtype(num_classes))}
    if not soft:
        stored["classes"] = stored["predicted"][:, None]
        stored["probs"] = torch.ones(len(logits), 1, dtype=torch.float16)
        return stored
    probs = (logits / temperature).softmax(1)
    if top_k < num_classes:
        probs, classes = probs.topk(top_k, dim=1)
        stored["classes"] = classes.to(class_dtype(num_classes))
    stored["probs"] = probs.to(torch.float16)
    return stored


class LabelWriter:
    """Appends reduced batches to a rank's part files, a part whenever PART_BYTES fill. The
    part's buffers are allocated once, at the first batch, and refilled for every part."""

    def __init__(self, out: Path, rank: int, start: int):
        self.out, self.rank, self.start = out, rank, start
        self.buffers: dict[str, torch.Tensor] = {}
        self.rows = self.part = 0

    def append(self, stored: dict[str, torch.Tensor]) -> None:
        if not self.buffers:
            row_bytes = sum(v[0].nbytes for v in stored.values())
            capacity = max(1, PART_BYTES // row_bytes)
            self.buffers = {k: torch.empty((capacity, *v.shape[1:]), dtype=v.dtype)
                            for k, v in stored.items()}
        capacity, done, count = len(self.buffers["confidence"]), 0, len(stored["confidence"])
        while done < count:
            take = min(count - done, capacity - self.rows)
            for key, values in stored.items():
                self.buffers[key][self.rows:self.rows + take] = values[done:done + take]
            self.rows, done = self.rows + take, done + take
            if self.rows == capacity:
                self._flush()

    def close(self) -> None:
        if self.rows:
            self._flush()

    def _flush(self) -> None:
        part = {k: v[:self.rows] for k, v in self.buffers.items()}
        part["start"] = torch.tensor([self.start], dtype=torch.int64)
        runs.save_weights(self.out / LABEL_PARTS.name(self.rank, self.part), part,
                          every_rank=True)
        self.start += self.rows
        self.rows = 0
        self.part += 1


class ShardLabelWriter:
    """For streamed shards: each shard's reduced batches gathered (in the order its worker
    read them) and written as one part, ``labels-RANK-SHARD``, when the shard ends. Its
    ``start`` is the shard's first index and ``position`` each row's place in the shard, so
    parts sorted by name are in index order. Memory: one shard per loader worker."""

    def __init__(self, out: Path, rank: int):
        self.out, self.rank = out, rank
        self.pending: dict[int, list[tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {}

    def append(self, shard: int, positions: torch.Tensor, stored: dict[str, torch.Tensor]):
        self.pending.setdefault(shard, []).append((positions, stored))

    def finish(self, shard: int) -> None:
        """The shard is read whole: write its part (none when no image of it was readable)."""
        batches = self.pending.pop(shard, [])
        if not batches:
            return
        part = {k: torch.cat([stored[k] for _, stored in batches]) for k in batches[0][1]}
        part["position"] = torch.cat([positions for positions, _ in batches])
        part["start"] = torch.tensor([image_index(shard, 0)], dtype=torch.int64)
        runs.save_weights(self.out / LABEL_PARTS.name(self.rank, shard), part, every_rank=True)


def label_parts(directory: Path, rank: int | None = None) -> list[Path]:
    """The label part files (of one rank, or all), in global index order."""
    return LABEL_PARTS.find(directory, rank)


def selected_part(label_part: Path) -> Path:
    """The selection's file beside a label part: the copies of each of its images."""
    return label_part.with_name(SELECTED_COPIES.name(*LABEL_PARTS.numbers(label_part)))


def retemper(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Stored soft labels p at a new temperature: p^(1/T) renormalised, which is the labeler's
    softmax(logits / T). T < 1 sharpens (MixMatch's sharpening, UDA's softmax temperature),
    T > 1 softens; one-hot labels stay one-hot."""
    if temperature == 1.0:
        return probs
    # In log space: p^(1/T) of a small p underflows in fp32 long before T reaches 0.1. A zero
    # stays zero (log 0 = -inf).
    return F.softmax(torch.log(probs.float()) / temperature, dim=1)


class SoftTargets:
    """Soft labels stored as top-k rows (or every class), turned dense a batch at a time:
    ``targets[idx]`` is a float32 (len(idx), num_classes) tensor whose rows sum to 1, at
    ``temperature`` (p^(1/T) renormalised, the labeler's softmax(logits / T))."""

    def __init__(self, probs: torch.Tensor, classes: torch.Tensor | None, num_classes: int,
                 temperature: float = 1.0):
        self.probs, self.classes = probs, classes
        self.num_classes, self.temperature = num_classes, temperature

    def __len__(self) -> int:
        return len(self.probs)

    @property
    def nbytes(self) -> int:
        return self.probs.nbytes + (0 if self.classes is None else self.classes.nbytes)

    def to(self, device: torch.device) -> SoftTargets:
        classes = None if self.classes is None else self.classes.to(device)
        return SoftTargets(self.probs.to(device), classes, self.num_classes, self.temperature)

    def __getitem__(self, idx) -> torch.Tensor:
        probs = self.probs[idx].float()
        probs = retemper(probs / probs.sum(1, keepdim=True).clamp_min(1e-12), self.temperature)
        if self.classes is None:
            return probs
        dense = torch.zeros(len(probs), self.num_classes, device=probs.device)
        return dense.scatter_(1, self.classes[idx].long(), probs)

    def dense(self) -> torch.Tensor:
        return self[torch.arange(len(self))]
