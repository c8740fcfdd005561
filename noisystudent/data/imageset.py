"""The image collection every data source returns: uint8 rows in memory (or in a .npy on disk)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .arrays import Images, rows_of


@dataclass
class ImageSet:
    images: Images  # uint8 (N, C, H, W), C is 1 or 3; NpyImages: on disk
    labels: torch.Tensor  # int64 (N,), -1 where the label is unknown
    classes: list[str]  # class names, index = label
    paths: list[str] | None = None  # source file per image when loaded from files
    skipped: list[str] = field(default_factory=list)  # files skipped as unreadable

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, indices) -> ImageSet:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        paths = None if self.paths is None else [self.paths[i] for i in idx.tolist()]
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=list(self.classes),
            paths=paths,
            skipped=list(self.skipped),
        )



def concatenate(sets: list[ImageSet]) -> ImageSet:
    """The sets' images one after another, in memory (with the first one's classes; file
    paths where every set has them)."""
    images = torch.cat([rows_of(s.images, torch.arange(len(s))) for s in sets])
    paths = None if any(s.paths is None for s in sets) else [p for s in sets for p in s.paths]
    return ImageSet(images=images, labels=torch.cat([s.labels for s in sets]),
                    classes=list(sets[0].classes), paths=paths,
                    skipped=[p for s in sets for p in s.skipped])
