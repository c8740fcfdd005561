"""The images to label next: the unlabeled images where a human label would help most.

The rule is least-margin sampling (Scheffer et al. 2001; Settles' survey of active learning):
the images whose soft label, as the teacher stored it, has the smallest gap between its two
most likely classes (the confidence itself when only one-hot labels were stored). They are
spread evenly over the teacher's predicted classes: the lowest-margin image of every class,
then the second of every class, and so on, so that one confused pair of classes does not take
every slot. Ties go to the lower image index.

The candidates stream: each label part adds its images, and only each class's ``count``
lowest margins are held, so memory is O(classes x count) whatever the number of images.
The chosen images are written as files in ``to-label/`` beside ``to-label.csv`` (a copy of
the original file where there is one, else a PNG of the stored pixels), so the CSV is a
``path,label`` manifest that ``--extra-labeled`` reads once the labels are filled in; and
beside it ``to-label.label-studio.json``, the same images as Label Studio tasks with the
teacher's guesses as pre-annotations, whose export ``--extra-labeled`` reads as well
(``data/label_studio.py``).
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image

from noisystudent.core import runs
from noisystudent.data.arrays import Images, rows_of
from noisystudent.data.imageset import ImageSet
from noisystudent.data.label_studio import copy_import, task, write_import
from noisystudent.data.shards import StreamedSource, samples_at

from .selection import Part

TO_LABEL_CSV = "to-label.csv"
TO_LABEL_DIR = "to-label"
COLUMNS = ("path", "label", "guess", "confidence", "margin", "source")


def margins(stored: dict[str, torch.Tensor]) -> torch.Tensor:
    """The gap between the two largest stored probabilities of each image (top-k parts hold
    them sorted, full ones in class order); the confidence where only one class is stored."""
    probs = stored["probs"].float()
    if probs.shape[1] < 2:
        return stored["confidence"].float()
    top = probs.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def second_guesses(stored: dict[str, torch.Tensor],
                   predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's most likely class other than ``predicted`` and its probability (-1 and 0
    where only one class is stored). Not the stored probabilities' second place: they are
    stored in fp16, and where two round to a tie the second place can be the predicted class."""
    probs = stored["probs"].float()
    if probs.shape[1] < 2:
        return torch.full((len(probs),), -1, dtype=torch.int64), torch.zeros(len(probs))
    # A top-k part stores the class of each probability; a full one is in class order.
    classes = stored["classes"].long() if "classes" in stored else \
        torch.arange(probs.shape[1]).expand(len(probs), -1)
    others = probs.masked_fill(classes == predicted.long()[:, None], -1.0)
    place = others.argmax(1, keepdim=True)
    return classes.gather(1, place)[:, 0], probs.gather(1, place)[:, 0]


class Lowest:
    """The ``count`` rows of lowest ``key`` of each predicted class (``per_class=False``: of
    all rows) over the rows added; ties go to the lower image index. Rows are dicts of
    equal-length tensors holding ``key``, ``index`` (and ``predicted``); memory stays
    O(classes x count) however many are added."""

    def __init__(self, count: int, key: str, *, per_class: bool = True):
        self.count, self.key, self.per_class = count, key, per_class
        self.rows: dict[str, torch.Tensor] | None = None  # the rows held so far

    def ranked(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the rows are ranked by, lowest first."""
        return rows[self.key]

    @property
    def seen(self) -> bool:
        """Whether any rows were added (maybe none of them held)."""
        return self.rows is not None

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        merged = rows if self.rows is None else {
            name: torch.cat([self.rows[name], rows[name]]) for name in self.rows}
        order, rank = self._order(merged)
        self.rows = {name: values[order[rank < self.count]] for name, values in merged.items()}

    def chosen(self, count: int) -> dict[str, torch.Tensor]:
        """``count`` rows, the classes taking turns: each class's lowest, then its second..."""
        if self.rows is None:
            return {}
        order, rank = self._order(self.rows)
        predicted = self._groups(self.rows)[order]
        classes = int(predicted.max()) + 1 if len(predicted) else 1
        turns = torch.sort(rank * classes + predicted, stable=True).indices
        picked = order[turns[:count]]
        return {name: values[picked] for name, values in self.rows.items()}

    def of_class(self, label: int) -> dict[str, torch.Tensor]:
        """One class's held rows, lowest first."""
        if self.rows is None:
            return {}
        order, _ = self._order(self.rows)
        order = order[self.rows["predicted"][order] == label]
        return {name: values[order] for name, values in self.rows.items()}

    def _groups(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        return rows["predicted"] if self.per_class else torch.zeros_like(rows["index"])

    def _order(self, rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return class_order(self._groups(rows), self.ranked(rows), rows["index"])


class Highest(Lowest):
    """The ``count`` rows of highest ``key`` (of each predicted class, or of all rows)."""

    def ranked(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        return -rows[self.key]


class LowestMargins(Lowest):
    """Each predicted class's ``count`` lowest-margin images over the parts added."""

    def __init__(self, count: int):
        super().__init__(count, "margin")
        self.rows = {"margin": torch.empty(0), "index": torch.empty(0, dtype=torch.int64),
                     "predicted": torch.empty(0, dtype=torch.int64),
                     "confidence": torch.empty(0),
                     "second": torch.empty(0, dtype=torch.int64),
                     "second_confidence": torch.empty(0)}  # no parts: an empty choice, not {}

    def add(self, part: Part) -> None:
        rows = torch.arange(len(part.confidence))
        second, second_confidence = second_guesses(part.stored, part.predicted)
        super().add({"margin": margins(part.stored), "index": part.index(rows).long(),
                     "predicted": part.predicted.long(),
                     "confidence": part.confidence.float(), "second": second,
                     "second_confidence": second_confidence})


def class_order(classes: torch.Tensor, ranked: torch.Tensor,
                index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows sorted by (class, ``ranked``, index), and each one's rank within its class."""
    order = torch.sort(index, stable=True).indices
    order = order[torch.sort(ranked[order], stable=True).indices]
    order = order[torch.sort(classes[order], stable=True).indices]
    classes = classes[order]
    first = torch.ones_like(classes, dtype=torch.bool)
    first[1:] = classes[1:] != classes[:-1]
    starts = torch.nonzero(first).flatten()
    sizes = torch.diff(torch.cat([starts, torch.tensor([len(classes)])]))
    rank = torch.arange(len(classes)) - torch.repeat_interleave(starts, sizes)
    return order, rank


def write_to_label(out: Path, parts: Iterable[Part], images: ImageSet | StreamedSource,
                   classes: list[str], count: int) -> int:
    """``to-label.csv`` and the files it lists, in ``out``: the ``count`` images to label next
    among the parts' images (indices into ``images``). Returns how many it lists."""
    lowest = LowestMargins(count)
    for part in parts:
        lowest.add(part)
    chosen = lowest.chosen(count)
    folder = out / TO_LABEL_DIR
    shutil.rmtree(folder, ignore_errors=True)  # an earlier, interrupted pass's files
    folder.mkdir(parents=True)
    files = _write_images(folder, chosen["index"].tolist(), images)
    rows = [{"path": f"{TO_LABEL_DIR}/{files[index][0]}", "label": "",
             "guess": classes[int(guess)], "confidence": f"{float(confidence):.4f}",
             "margin": f"{float(margin):.4f}", "source": files[index][1]}
            for index, guess, confidence, margin in zip(
                chosen["index"].tolist(), chosen["predicted"], chosen["confidence"],
                chosen["margin"])]
    write_rows(out / TO_LABEL_CSV, rows)
    write_import(out, [task(row["path"], out, guesses(chosen, i, classes))
                       for i, row in enumerate(rows)], classes)
    return len(rows)


def guesses(chosen: dict[str, torch.Tensor], row: int,
            classes: list[str]) -> list[tuple[str, float]]:
    """The teacher's two top guesses for a chosen image (one where it stored one class)."""
    found = [(classes[int(chosen["predicted"][row])], float(chosen["confidence"][row]))]
    if int(chosen["second"][row]) >= 0:
        found.append((classes[int(chosen["second"][row])],
                      float(chosen["second_confidence"][row])))
    return found


def _write_images(folder: Path, indices: list[int], images: ImageSet | StreamedSource
                  ) -> dict[int, tuple[str, str]]:
    """Each chosen image as a file in ``folder``: {index: (file name, where it came from)}."""
    files: dict[int, tuple[str, str]] = {}
    if isinstance(images, StreamedSource):
        for index, sample in samples_at(images, indices):
            if sample.data is not None:
                name = f"{index:012d}.{sample.extension or 'png'}"
                runs.atomic_write(folder / name, lambda tmp, d=sample.data: tmp.write_bytes(d))
                files[index] = (name, sample.name)
        return files
    for index in indices:
        if images.paths is not None:  # the original file, at its own resolution
            source = images.paths[index]
            name = f"{index:09d}{Path(source).suffix.lower()}"
            runs.atomic_write(folder / name, lambda tmp, s=source: shutil.copyfile(s, tmp))
        else:
            source, name = f"image {index}", f"{index:09d}.png"
            buffer = io.BytesIO()
            stored_pictures(images.images, [index])[0].save(buffer, format="PNG")
            runs.atomic_write(folder / name, lambda tmp, b=buffer: tmp.write_bytes(b.getvalue()))
        files[index] = (name, source)
    return files


def stored_pictures(images: Images, indices: list[int]) -> list[Image.Image]:
    """The stored pixels of the rows ``indices`` as pictures (grayscale or RGB)."""
    pixels = rows_of(images, torch.tensor(indices, dtype=torch.int64)).numpy()
    return [Image.fromarray(p[0] if p.shape[0] == 1 else p.transpose(1, 2, 0)) for p in pixels]


def copy_to_run(labels: Path, run: Path) -> bool:
    """The run's own ``to-label.csv``: the last labeling's (``labels``), its paths made
    relative to the run directory, so that it too is a manifest. False where there is none."""
    source = labels / TO_LABEL_CSV
    if not source.is_file():
        return False
    with open(source, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    prefix = labels.relative_to(run).as_posix()
    for row in rows:
        row["path"] = f"{prefix}/{row['path']}"
    write_rows(run / TO_LABEL_CSV, rows)
    copy_import(labels, run)
    return True


def write_rows(path: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    runs.atomic_write(path, write)
