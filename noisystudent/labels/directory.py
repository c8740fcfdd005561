"""A pseudo-label directory as every command reads it: its ``summary.json`` (written last, so
it marks the labeling done), whether the labeling is complete and whole, its kept images with
their soft labels, and its label parts as selection reads them.

    DIR/summary.json                  what was labeled and kept (``pseudo_label`` writes it)
    DIR/labels-RANK-PART.safetensors  the teacher's reduced outputs (``store.py``)
    DIR/kept-RANK-PART.safetensors    selection's copies of each image of that part
    DIR/kept-RANK-SHARD.tar           streamed sources: the kept images (``kept_shards.py``)
    DIR/to-label.csv, DIR/to-label/   the images to label next (``to_label.py``)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from noisystudent.core import runs
from noisystudent.core.device import release_free_heap
from noisystudent.core.errors import UserError

from .kept_shards import check_kept_shards
from .selection import Part
from .store import (
    KEPT_COPIES,
    KEPT_SHARDS,
    LABEL_PARTS,
    SoftTargets,
    kept_part,
    label_parts,
    read_kept,
)

SUMMARY = "summary.json"
# Written before the labels streamed: each rank's kept indices and fp32 probabilities.
LEGACY_PARTS = "pseudo-*.safetensors"


def read_summary(directory: str | Path) -> dict:
    return runs.read_json(runs.require_run(directory, SUMMARY) / SUMMARY)


def remove_parts(directory: Path) -> None:
    """The part files of an unfinished labeling (maybe with more ranks): never valid."""
    patterns = (LEGACY_PARTS, *(kind.pattern() for kind in (LABEL_PARTS, KEPT_COPIES,
                                                             KEPT_SHARDS)))
    for pattern in patterns:
        for stale in directory.glob(pattern):
            stale.unlink()


def stored_bytes(directory: Path) -> int:
    """What the label parts and the copies take on disk."""
    return sum(p.stat().st_size for kind in (LABEL_PARTS, KEPT_COPIES)
               for p in directory.glob(kind.pattern()))


def pseudo_labels_complete(directory: str | Path) -> bool:
    """Finished (summary.json is written last), every part passes its checksum and every kept
    tar shard is there whole."""
    try:
        directory = runs.require_run(directory, SUMMARY)
        summary = runs.read_json(directory / SUMMARY)
        if "kept_shards" not in summary:
            read_pseudo_labels(directory)
            return True
        for path in label_parts(directory):
            runs.load_weights(path), runs.load_weights(kept_part(path))
        check_kept_shards(directory, summary["kept_shards"])
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
    if not label_parts(directory) and (legacy := sorted(directory.glob(LEGACY_PARTS))):
        parts = [runs.load_weights(p) for p in legacy]
        index = torch.cat([p["index"] for p in parts])
        probs = torch.cat([p["probs"] for p in parts])
        order = index.argsort(stable=True)
        return index[order], SoftTargets(probs[order], None, num_classes, temperature), summary
    index, targets = read_kept(directory, num_classes, temperature)
    return index, targets, summary


def selection_parts(directory: Path, rank: int | None) -> Iterator[Part]:
    """The label parts of one rank (None: all), as selection reads them."""
    for path in label_parts(directory, rank):
        stored = runs.load_weights(path)
        yield Part(int(stored["start"]), stored["confidence"], stored["predicted"].long(),
                   stored.get("position"), stored)
        del stored
        release_free_heap()  # each part's temporaries are freed: keep the heap from growing
