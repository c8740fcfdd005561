"""Unlabeled images that stream: WebDataset ``.tar`` shards, or a plain folder of images.

The field's large image sets ship as tar shards (LAION, DataComp, timm's ``wds/`` reader), each
sample a group of members sharing a key (``0001.jpg``, ``0001.json``). ``webdataset`` reads
them (local paths, or any URL or ``pipe:`` command it opens); a folder's sorted files are cut
into shards of ``FOLDER_SHARD`` files, and a Hugging Face dataset into row ranges or Parquet
files (``hf.py``), so all of them stream the same way.

An image's index is ``(shard number << 32) | its position in the shard`` (samples in tar order,
unreadable ones included), so every pass over the shards (labeling, then writing the selected set)
names an image the same way. Each rank takes a contiguous block of shards and each DataLoader
worker a contiguous block of that, decoding its images at the teacher's size in the worker.
Unreadable members are skipped and counted (``strict``: a one-line error).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from braceexpand import braceexpand
from webdataset.tariterators import tarfile_samples

from noisystudent.core.errors import UserError

from .decode import UnreadableImage, decode_image
from .files import IMAGE_EXTENSIONS, find_images
from .hf import DatasetShard, dataset_shards, dataset_spec, extension_of, image_bytes

SHARD_BITS = 32
FOLDER_SHARD = 10_000  # files of a folder per shard
IMAGE_KEYS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
UNLABELED_SPLITS = ("unlabeled", "train")  # a dataset's split for --unlabeled, unless named


def image_index(shard: int, position: int | torch.Tensor):
    return (shard << SHARD_BITS) | position


def shard_of(index: int) -> int:
    return index >> SHARD_BITS


@dataclass(frozen=True)
class Sample:
    """One member group of a shard: its position, a name for messages, the image's extension
    and encoded bytes (None when the sample has no readable image)."""

    position: int
    name: str
    extension: str
    data: bytes | None
    problem: str = ""


@dataclass
class StreamedSource:
    """Where streamed images come from: shards, each a tar (path or URL), a tuple of image
    files or a part of a Hugging Face dataset; decoded at ``size`` with ``channels``."""

    description: str
    shards: list[str | tuple[str, ...] | DatasetShard]
    size: int
    channels: int
    strict: bool

    def samples(self, shard: int) -> Iterator[Sample]:
        """The samples of shard ``shard``, in order: the same every time it is read."""
        source = self.shards[shard]
        if isinstance(source, str):
            yield from tar_samples(source)
        elif isinstance(source, DatasetShard):
            yield from dataset_samples(source)
        else:
            yield from file_samples(source)

    def decode(self, sample: Sample) -> np.ndarray:
        """uint8 (C, size, size); raises UnreadableImage."""
        if sample.data is None:
            raise UnreadableImage(f"{sample.name}: {sample.problem}")
        buffer = io.BytesIO(sample.data)
        try:
            array = decode_image(buffer, self.size, self.channels)
        except UnreadableImage as err:  # PIL names the buffer, not the member
            problem = str(err.__cause__).replace(f" {buffer!r}", "")
            raise UnreadableImage(f"{sample.name}: {problem}") from None
        return array.transpose(2, 0, 1)


def samples_at(source: StreamedSource, indices: list[int]) -> Iterator[tuple[int, Sample]]:
    """The samples at ``indices`` (image indices of ``source``), each shard read once, in
    index order; an index past a shard's end yields nothing."""
    wanted: dict[int, set[int]] = {}
    for index in indices:
        wanted.setdefault(shard_of(index), set()).add(index & ((1 << SHARD_BITS) - 1))
    for shard, positions in sorted(wanted.items()):
        for sample in source.samples(shard):
            if sample.position in positions:
                yield image_index(shard, sample.position), sample


def tar_samples(url: str) -> Iterator[Sample]:
    """A tar shard's samples through webdataset; a tar that breaks off ends the shard there
    (counted as one unreadable sample)."""
    errors: list[Exception] = []
    stream = tarfile_samples([{"url": url}], handler=lambda err: errors.append(err) or False)
    position = 0
    for position, sample in enumerate(stream):
        key = next((k for k in IMAGE_KEYS if k in sample), None)
        name = f"{url}:{sample['__key__']}"
        yield Sample(position, name, key or "", sample[key] if key else None,
                     "" if key else "no image member (" + ", ".join(
                         k for k in sample if not k.startswith("__")) + ")")
    if errors:
        yield Sample(position + 1, url, "", None, f"unreadable tar: {errors[0]}")


def file_samples(files: tuple[str, ...]) -> Iterator[Sample]:
    for position, path in enumerate(files):
        try:
            data, problem = Path(path).read_bytes(), ""
        except OSError as err:
            data, problem = None, str(err)
        yield Sample(position, path, Path(path).suffix.lower().lstrip("."), data, problem)


def dataset_samples(shard: DatasetShard) -> Iterator[Sample]:
    """A Hugging Face dataset shard's images, in row order."""
    for position, cell in enumerate(shard.cells()):
        data, problem = image_bytes(cell)
        yield Sample(position, f"{shard.name}:{position}", extension_of(data), data, problem)


def open_source(path: str | Path, size: int, channels: int, strict: bool,
                max_images: int = 0, *, image_column: str | None = None) -> StreamedSource:
    """The shards ``path`` names: a brace pattern such as ``shards/{0000..0099}.tar``, one
    .tar, a folder of .tar files, a folder of images (nested allowed), or a Hugging Face
    dataset (``data/hf.py``; ``image_column`` names its image column, else it is found)."""
    text = str(path)
    spec = dataset_spec(text)
    if spec is not None:
        shards = dataset_shards(spec, UNLABELED_SPLITS, image_column, max_images)
        return StreamedSource(f"dataset {spec.text}", list(shards), size, channels, strict)
    if "{" in text or text.endswith(".tar"):
        shards = list(braceexpand(text))
        local = [s for s in shards if "://" not in s and not s.startswith("pipe:")]
        missing = [s for s in local if not Path(s).is_file()]
        if missing:
            raise UserError(f"{len(missing)} of {len(shards)} shards of {text} are missing, "
                            f"the first {missing[0]}")
        return _shards(f"tar shards {text}", shards, size, channels, strict,
                       max_images=max_images)
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise UserError(f"unlabeled images not found: {text} (give a folder of images, a "
                        "folder of .tar shards, a brace pattern such as "
                        "'shards/{0000..0099}.tar', a Hugging Face dataset (saved, Parquet, "
                        "or hf:NAME), or a .npy made by 'pack')")
    tars = sorted(str(p) for p in folder.glob("*.tar"))
    if tars:
        return _shards(f"tar shards in {folder}", tars, size, channels, strict,
                       max_images=max_images)
    files = [str(p) for p in find_images(folder)]
    if not files:
        raise UserError(f"no images or .tar shards found in {folder}")
    if 0 < max_images < len(files):
        files = [files[i] for i in spread(len(files), max_images)]
    return StreamedSource(f"folder {folder}", [tuple(files[i:i + FOLDER_SHARD])
                                               for i in range(0, len(files), FOLDER_SHARD)],
                          size, channels, strict)


def spread(total: int, count: int) -> list[int]:
    """``count`` indices of ``total``, evenly spaced from the first to the last."""
    step = total / count
    return [int(i * step) for i in range(count)]


def _shards(description: str, shards: list[str], size: int, channels: int, strict: bool, *,
            max_images: int) -> StreamedSource:
    if max_images:
        raise UserError("--max-images counts a folder's or a .npy's images; for tar shards, "
                        "name fewer shards in the pattern")
    return StreamedSource(description, shards, size, channels, strict)


class LabelingStream(torch.utils.data.IterableDataset):
    """Batches of decoded images of the shards ``shards`` (global shard numbers), decoded in
    DataLoader workers, each worker a contiguous block of them. A batch never spans two
    shards; a shard's last batch (maybe empty) has ``end`` set, and every batch lists the
    samples it skipped."""

    def __init__(self, source: StreamedSource, shards: range, batch_size: int):
        self.source, self.shards, self.batch_size = source, shards, batch_size

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        share = len(self.shards)
        mine = self.shards[share * worker // workers:share * (worker + 1) // workers]
        for shard in mine:
            images, positions, skipped = [], [], []
            for sample in self.source.samples(shard):
                try:
                    images.append(self.source.decode(sample))
                    positions.append(sample.position)
                except UnreadableImage as err:
                    skipped.append(str(err))
                if len(images) == self.batch_size:
                    yield self._batch(shard, worker, images, positions, skipped, end=False)
                    images, positions, skipped = [], [], []
            yield self._batch(shard, worker, images, positions, skipped, end=True)

    def _batch(self, shard: int, worker: int, images: list, positions: list, skipped: list, *,
               end: bool) -> dict:
        shape = (0, self.source.channels, self.source.size, self.source.size)
        return {"images": torch.from_numpy(np.stack(images)) if images
                else torch.empty(shape, dtype=torch.uint8),
                "position": torch.tensor(positions, dtype=torch.int32),
                "shard": shard, "worker": worker, "end": end, "skipped": skipped}


def labeling_batches(source: StreamedSource, shards: range, batch_size: int,
                     workers: int) -> torch.utils.data.DataLoader:
    workers = min(workers, len(shards))
    return torch.utils.data.DataLoader(LabelingStream(source, shards, batch_size),
                                       batch_size=None, num_workers=workers)
