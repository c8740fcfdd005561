"""A pseudo-label directory as every command reads it: its ``summary.json`` (written last, so
it marks the labeling done), whether the labeling is complete and whole, its selected images
with their soft labels, and its label parts as selection reads them.

    DIR/summary.json                      what was labeled and selected (``pseudo_label``)
    DIR/labels-RANK-PART.safetensors      the teacher's reduced outputs (``store.py``)
    DIR/selected-RANK-PART.safetensors    selection's copies of each image of that part
    DIR/selected-RANK-SHARD.tar           streamed sources: the selected images
    DIR/to-label.csv, DIR/to-label/       the images to label next (``to_label.py``)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from noisystudent.core import runs
from noisystudent.core.device import release_free_heap
from noisystudent.core.errors import UserError

from .selected_shards import check_selected_shards
from .selection import Part
from .store import (
    LABEL_PARTS,
    SELECTED_COPIES,
    SELECTED_SHARDS,
    PartFiles,
    SoftTargets,
    label_parts,
    selected_part,
)

SUMMARY = "summary.json"
# Written before the labels streamed: each rank's selected indices and fp32 probabilities.
LEGACY_PARTS = "pseudo-*.safetensors"
# Written before "kept" came to mean only the step a run keeps (core/keep.py): selection's
# files and summary keys said "kept". Read here only, under the new names; the summary lists
# the old tar shards by their names, so those need nothing more.
OLD_COPIES = PartFiles("kept")
OLD_SHARDS = PartFiles("kept", ".tar")
OLD_KEYS = {"kept": "selected", "unique_kept": "unique_selected",
            "kept_accuracy": "selected_accuracy", "kept_shards": "selected_shards"}


def read_summary(directory: str | Path) -> dict:
    """summary.json, an older labeling's keys (``OLD_KEYS``) under their new names."""
    summary = runs.read_json(runs.require_run(directory, SUMMARY) / SUMMARY)
    return {OLD_KEYS.get(key, key): value for key, value in summary.items()}


def read_copies(label_part: Path) -> torch.Tensor:
    """The copies selection chose of each image of a label part (from ``kept-*`` where an
    older labeling wrote them)."""
    path = selected_part(label_part)
    old = label_part.with_name(OLD_COPIES.name(*LABEL_PARTS.numbers(label_part)))
    return runs.load_weights(old if not path.exists() and old.exists() else path)["copies"]


def remove_parts(directory: Path) -> None:
    """The part files of an unfinished labeling (maybe with more ranks): never valid."""
    kinds = (LABEL_PARTS, SELECTED_COPIES, SELECTED_SHARDS, OLD_COPIES, OLD_SHARDS)
    for pattern in (LEGACY_PARTS, *(kind.pattern() for kind in kinds)):
        for stale in directory.glob(pattern):
            stale.unlink()


def stored_bytes(directory: Path) -> int:
    """What the label parts and the copies take on disk."""
    return sum(p.stat().st_size for kind in (LABEL_PARTS, SELECTED_COPIES)
               for p in directory.glob(kind.pattern()))


def pseudo_labels_complete(directory: str | Path) -> bool:
    """Finished (summary.json is written last), every part passes its checksum and every
    selected tar shard is there whole."""
    try:
        summary = read_summary(directory)
        directory = Path(directory)
        if "selected_shards" not in summary:
            read_pseudo_labels(directory)
            return True
        for path in label_parts(directory):
            runs.load_weights(path), read_copies(path)
        check_selected_shards(directory, summary["selected_shards"])
        return True
    except UserError:
        return False


def read_pseudo_labels(directory: str | Path,
                       temperature: float = 1.0) -> tuple[torch.Tensor, SoftTargets, dict]:
    """The selected images of a pseudo-label directory, in index order (an image repeated as
    often as it was selected), their soft labels at ``temperature``, and the summary."""
    summary = read_summary(directory)
    directory = Path(directory)
    num_classes = len(summary["classes"])
    if not label_parts(directory) and (legacy := sorted(directory.glob(LEGACY_PARTS))):
        parts = [runs.load_weights(p) for p in legacy]
        index = torch.cat([p["index"] for p in parts])
        probs = torch.cat([p["probs"] for p in parts])
        order = index.argsort(stable=True)
        return index[order], SoftTargets(probs[order], None, num_classes, temperature), summary
    index, targets = read_selected(directory, num_classes, temperature)
    return index, targets, summary


def read_selected(directory: Path, num_classes: int,
                  temperature: float = 1.0) -> tuple[torch.Tensor, SoftTargets]:
    """The selected images' indices (an image repeated as many times as it was selected, in
    index order) and their soft labels, from every rank's parts."""
    indices, probs, classes = [], [], []
    for path in label_parts(directory):
        labels = runs.load_weights(path)
        copies = read_copies(path).long()
        rows = torch.repeat_interleave(torch.arange(len(copies)), copies)
        offsets = labels["position"][rows].long() if "position" in labels else rows
        indices.append(offsets + int(labels["start"]))
        probs.append(labels["probs"][rows])
        if "classes" in labels:
            classes.append(labels["classes"][rows])
    if not indices:
        raise UserError(f"{directory} has no {LABEL_PARTS.name(0, 0)} parts")
    return torch.cat(indices), SoftTargets(torch.cat(probs),
                                           torch.cat(classes) if classes else None,
                                           num_classes, temperature)


def selection_parts(directory: Path, rank: int | None) -> Iterator[Part]:
    """The label parts of one rank (None: all), as selection reads them."""
    for path in label_parts(directory, rank):
        stored = runs.load_weights(path)
        yield Part(int(stored["start"]), stored["confidence"], stored["predicted"].long(),
                   stored.get("position"), stored)
        del stored
        release_free_heap()  # each part's temporaries are freed: keep the heap from growing
