"""Which pseudo-labeled images a student learns from: the official Noisy Student rule.

Images below a confidence threshold are dropped; then each predicted class is brought to
``per_class`` images: a full class keeps its most confident ``per_class``, a rare class every
image ``per_class // m`` times plus one more copy of ``per_class % m`` of them drawn at random.

Both choices are "the n first of a class in some order": by confidence, highest first, for a
full class; by a random key, a hash of (seed, image index), for a rare class's extra copies.
Ties go to the lower image index. Because the random key is a function of the image index, the
rule needs no state beyond the images' own values. So the in-memory ``select_and_balance``
(small sets, tests) and the streamed ``StreamedSelection`` (any N, any number of ranks) make
the same choice. The streamed one finds each class's cut-off key by radix histograms: three
passes of 1,024 bins per class over the 30-bit keys, so its memory is O(classes x 1,024),
whatever N is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

KEY_BITS = 30  # confidences in [0, 1] as fp32 bit patterns fit in 30 bits
LEVEL_BITS = 10
LEVELS = KEY_BITS // LEVEL_BITS
BINS = 1 << LEVEL_BITS
ALL = 1 << KEY_BITS  # a cut-off above every key: the class keeps all its members
ONE_BITS = 0x3F800000  # the bit pattern of fp32 1.0


def confidence_key(confidence: torch.Tensor) -> torch.Tensor:
    """int64 keys whose ascending order is descending confidence (the fp32 bit patterns of
    non-negative floats sort as the floats do)."""
    bits = confidence.float().clamp(0, 1).contiguous().view(torch.int32).to(torch.int64)
    return ONE_BITS - bits


def random_key(index: torch.Tensor, seed: int) -> torch.Tensor:
    """A uniform 30-bit key per image, a hash of (seed, global image index): the order in
    which a rare class's images get their extra copy."""
    x = index.numpy().astype(np.uint64)
    mixed = _lowbias32((x >> np.uint64(32)) ^ _lowbias32(np.uint64(seed & 0xFFFFFFFF)))
    hashed = _lowbias32((x & np.uint64(0xFFFFFFFF)) ^ mixed)
    return torch.from_numpy((hashed >> np.uint64(32 - KEY_BITS)).astype(np.int64))


def _lowbias32(x: np.ndarray) -> np.ndarray:
    """Chris Wellons' lowbias32 integer hash, on uint64 arrays holding 32-bit values."""
    mask = np.uint64(0xFFFFFFFF)
    x = x & mask
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & mask
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & mask
    x ^= x >> np.uint64(16)
    return x


def default_per_class(above: int, num_classes: int, per_class: int) -> int:
    """Images per class after balancing: as set, or the mean above the threshold per class."""
    return per_class or max(1, round(above / num_classes))


def select_and_balance(confidence: torch.Tensor, predicted: torch.Tensor, num_classes: int, *,
                       threshold: float, per_class: int | None, seed: int,
                       index: torch.Tensor | None = None) -> torch.Tensor:
    """Rows selected (with repeats, sorted), in memory: the reference the streamed selection
    must equal. ``per_class`` None: no balancing, every image above the threshold once.
    ``index``: each row's global image index, increasing (the random key's input; default
    the row number)."""
    above = torch.nonzero(confidence >= threshold).flatten()
    if per_class is None:
        return above
    index = torch.arange(len(confidence)) if index is None else index
    conf_key, rand_key = confidence_key(confidence), random_key(index, seed)
    chosen = []
    for c in range(num_classes):
        members = above[predicted[above] == c]  # in index order, so ties go to the lower index
        if len(members) >= per_class:  # a full class keeps its most confident
            order = conf_key[members].argsort(stable=True)
            chosen.append(members[order[:per_class]])
        elif len(members):  # a rare class: whole copies, plus an extra one of a random share
            copies, remainder = divmod(per_class, len(members))
            extra = members[rand_key[members].argsort(stable=True)[:remainder]]
            chosen.append(torch.cat([members.repeat(copies), extra]))
    return torch.cat(chosen).sort().values if chosen else above[:0]


@dataclass
class Part:
    """A block of images as selection reads it: the first global index, each image's
    confidence and predicted class, and (for streamed shards, whose unreadable samples leave
    gaps) each image's offset from ``start``; consecutive when None."""

    start: int
    confidence: torch.Tensor
    predicted: torch.Tensor
    offsets: torch.Tensor | None = None
    stored: dict[str, torch.Tensor] | None = None  # every tensor of the part, as read

    def index(self, rows: torch.Tensor) -> torch.Tensor:
        """The global image index of the part's ``rows``."""
        return self.start + (rows if self.offsets is None else self.offsets[rows].long())


class StreamedSelection:
    """The same choice as ``select_and_balance`` over blocks read from disk, in any number of
    ranks. ``parts`` yields this rank's blocks in index order (it is called once per pass);
    ``all_reduce`` sums an int64 tensor over the ranks (identity for one process);
    ``exclusive_prefix`` gives, per element, the sum over the ranks before this one."""

    def __init__(self, parts: Callable[[], Iterable[Part]], num_classes: int, *,
                 threshold: float, balance: bool, per_class: int, seed: int,
                 all_reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
                 exclusive_prefix: Callable[[torch.Tensor], torch.Tensor] = torch.zeros_like):
        self.parts, self.num_classes = parts, num_classes
        self.threshold, self.seed = threshold, seed
        self.all_reduce, self.exclusive_prefix = all_reduce, exclusive_prefix
        self.members = self._histograms(0, None, None)  # (2, C, BINS): by conf and random key
        counts = self.members[0].sum(1)
        self.above = int(counts.sum())
        self.per_class = default_per_class(self.above, num_classes, per_class) if balance \
            else None
        self._cut_offs(counts)

    def _keys(self, part: Part) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class, conf key, random key) of the part's images above the threshold."""
        above = part.confidence >= self.threshold
        index = torch.nonzero(above).flatten()
        return (part.predicted[index].long(), confidence_key(part.confidence[index]),
                random_key(part.index(index), self.seed))

    def _histograms(self, level: int, use_random: torch.Tensor | None,
                    prefix: torch.Tensor | None) -> torch.Tensor:
        """Per class, counts of the key's ``level``-th 10-bit digit among the members whose
        higher digits equal ``prefix`` (level 0: both keys, every member)."""
        shift = KEY_BITS - LEVEL_BITS * (level + 1)
        hist = torch.zeros((2 if level == 0 else 1) * self.num_classes * BINS,
                           dtype=torch.int64)
        for part in self.parts():
            classes, conf_key, rand_key = self._keys(part)
            if level == 0:
                for which, key in enumerate((conf_key, rand_key)):
                    slot = (which * self.num_classes + classes) * BINS + (key >> shift)
                    hist += torch.bincount(slot, minlength=len(hist))
                continue
            key = torch.where(use_random[classes], rand_key, conf_key)
            inside = (key >> (shift + LEVEL_BITS)) == prefix[classes]
            slot = classes[inside] * BINS + ((key[inside] >> shift) & (BINS - 1))
            hist += torch.bincount(slot, minlength=len(hist))
        return self.all_reduce(hist).view(-1, self.num_classes, BINS).squeeze(0)

    def _cut_offs(self, counts: torch.Tensor) -> None:
        """Per class: the whole copies every member gets (``base``), which key orders the
        members drawn for one copy more, the cut-off key (members below it are drawn) and how
        many members with exactly that key are drawn (the first ones, by index)."""
        c = self.num_classes
        self.base = torch.zeros(c, dtype=torch.int64)
        need = torch.zeros(c, dtype=torch.int64)  # members drawn by the key order
        self.use_random = torch.zeros(c, dtype=torch.bool)
        if self.per_class is None:
            self.base[:] = 1  # no balancing: every member once, nobody drawn
        for k in range(c) if self.per_class is not None else ():
            m = int(counts[k])
            if m >= self.per_class:  # a full class draws its most confident
                need[k] = self.per_class
            elif m:  # a rare class: whole copies, and a random share drawn for one more
                self.base[k], need[k] = divmod(self.per_class, m)
                self.use_random[k] = True
        prefix, left = torch.zeros(c, dtype=torch.int64), need.clone()
        for level in range(LEVELS if bool((need > 0).any()) else 0):
            hist = torch.where(self.use_random[:, None], self.members[1], self.members[0]) \
                if level == 0 else self._histograms(level, self.use_random, prefix)
            total = hist.cumsum(1)
            digit = (total < left[:, None]).sum(1).clamp(max=BINS - 1)
            left -= (total - hist).gather(1, digit[:, None]).squeeze(1)  # members below it
            prefix = (prefix << LEVEL_BITS) | digit
        drawn = need > 0
        # Keys are >= 0, so a cut-off of 0 with no ties draws nobody.
        self.cut = torch.where(drawn, prefix, 0)
        self.ties = torch.where(drawn, left, 0)

    def chosen_copies(self) -> Iterable[tuple[Part, torch.Tensor]]:
        """For each of this rank's parts, in order: (the part, copies per image as int32, 0
        for the images left out). Ties at a cut-off go to the lowest indices across all ranks."""
        tie_counts = torch.zeros(self.num_classes, dtype=torch.int64)
        for part in self.parts():
            classes, key = self._part_keys(part)
            tie_counts += torch.bincount(classes[key == self.cut[classes]],
                                         minlength=self.num_classes)
        taken = self.exclusive_prefix(tie_counts)  # ties met by the ranks before this one
        for part in self.parts():
            above = torch.nonzero(part.confidence >= self.threshold).flatten()
            classes, key = self._part_keys(part)
            drawn = key < self.cut[classes]
            tie = key == self.cut[classes]
            for k in classes[tie].unique().tolist():  # the n-th tie of its class, by index
                where = torch.nonzero(tie & (classes == k)).flatten()
                drawn[where] = torch.arange(len(where)) + taken[k] < self.ties[k]
                taken[k] += len(where)
            copies = torch.zeros(len(part.confidence), dtype=torch.int32)
            copies[above] = (self.base[classes] + drawn.long()).to(torch.int32)
            yield part, copies

    def _part_keys(self, part: Part) -> tuple[torch.Tensor, torch.Tensor]:
        classes, conf_key, rand_key = self._keys(part)
        return classes, torch.where(self.use_random[classes], rand_key, conf_key)
