"""Hugging Face ``datasets`` as a source, read through the ``datasets`` library (the ``hf``
extra): a dataset saved with ``save_to_disk``, a folder of Parquet files, or ``hf:NAME`` for a
dataset already in the local Hugging Face cache. ``#SPLIT`` after any of them picks a split
(``my-dataset#test``); without it a command takes the split it expects ('train' for
``--data``, 'test' for ``--test-data``, 'unlabeled' or else 'train' for ``--unlabeled``), or
the only one there is.

Nothing is fetched at run time: the hub is switched off before ``datasets`` is imported, so a
name that is not cached is a one-line error saying to download it first.

The image column is the first ``Image`` feature and the label column the first
``ClassLabel`` (class names from its names), unless ``image_column`` / ``label_column`` name
them. Images are read undecoded (``Image(decode=False)``: the file's own bytes) and decoded
like every other source (``decode.py``), so an undecodable image is counted and skipped (or,
``strict``, a one-line error). Saved and cached datasets are memory-mapped Arrow tables, cut
into shards of ``ROWS_PER_SHARD`` rows; Parquet folders stream, one shard per file; either way
the pile streams through ``shards.py`` like tar shards, and memory does not grow with it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from noisystudent.core.errors import UserError

from .images import decode_images
from .imageset import ImageSet

log = logging.getLogger(__name__)

HUB_PREFIX = "hf:"
SPLIT_MARK = "#"
ROWS_PER_SHARD = 10_000
READ_BATCH = 256  # rows read at a time: their encoded bytes are all a shard holds in memory
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a ``datasets`` dataset is: ``kind`` 'saved' (save_to_disk), 'parquet' (a folder
    or file of Parquet) or 'hub' (a name in the local cache); ``split`` None when not given."""

    kind: str
    location: str
    split: str | None

    @property
    def text(self) -> str:
        name = HUB_PREFIX + self.location if self.kind == "hub" else self.location
        return name + (SPLIT_MARK + self.split if self.split else "")


def dataset_spec(text: str | Path) -> DatasetSpec | None:
    """The dataset ``text`` names, or None where it is no ``datasets`` source (a plain image
    folder, a CSV, tar shards...)."""
    text = str(text)
    base, mark, split = text.rpartition(SPLIT_MARK) if SPLIT_MARK in text else (text, "", "")
    split = split if mark else None
    if base.startswith(HUB_PREFIX):
        return DatasetSpec("hub", base[len(HUB_PREFIX):], split)
    path = Path(base).expanduser()
    if path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS):
        return DatasetSpec("saved", str(path), split)
    if (path.is_file() and path.suffix == ".parquet") or (path.is_dir() and any(
            next(path.glob(pattern), None) for pattern in ("*.parquet", "*/*.parquet"))):
        return DatasetSpec("parquet", str(path), split)
    return None


def hf_datasets():
    """The ``datasets`` module, with the hub switched off (nothing is fetched at run time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise UserError("Hugging Face datasets need the datasets package: "
                        "pip install -e '.[hf]' in a checkout") from None
    datasets.disable_progress_bars()
    return datasets


@contextlib.contextmanager
def offline(datasets):
    """The hub switched off for a while, even where ``datasets`` was imported before the
    environment said so (the user's own code, in the same process)."""
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


@functools.lru_cache(maxsize=8)
def open_splits(spec: DatasetSpec) -> dict:
    """{split: Dataset (memory-mapped) or IterableDataset (Parquet, streamed)}; cached per
    process, so a loader worker opens a dataset once."""
    datasets = hf_datasets()
    try:
        if spec.kind == "saved":
            opened = datasets.load_from_disk(spec.location)
        elif spec.kind == "parquet":
            opened = datasets.load_dataset("parquet", data_files=parquet_files(spec),
                                           streaming=True)
        else:
            with offline(datasets):
                opened = datasets.load_dataset(spec.location)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
        if spec.kind == "hub":
            raise UserError(
                f"{spec.text}: not in the local Hugging Face cache, and nothing is fetched at "
                f"run time; download it first: python -c \"import datasets; "
                f"datasets.load_dataset('{spec.location}')\"") from None
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise UserError(f"{spec.text}: cannot open it with datasets ({first})") from None
    if isinstance(opened, (datasets.Dataset, datasets.IterableDataset)):
        return {"train": opened}
    return dict(opened)


def parquet_files(spec: DatasetSpec) -> dict[str, list[str]]:
    """A Parquet folder's files by split, the way the hub lays them out (``train-*.parquet``,
    ``test/...``: a file's split is the first of its name's parts that names one), else all
    under 'train'."""
    path = Path(spec.location)
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    by_split: dict[str, list[str]] = {}
    for file in files:
        parts = [p for part in file.relative_to(path.parent if path.is_file() else path).parts
                 for p in part.replace(".parquet", "").replace("_", "-").split("-")]
        split = next((p for p in parts if p in ("train", "test", "validation", "unlabeled")),
                     "train")
        by_split.setdefault(split, []).append(str(file))
    return by_split


def pick_split(spec: DatasetSpec, default: tuple[str, ...]):
    """The split ``spec`` names, else the first of ``default`` there is, else the only one."""
    splits = open_splits(spec)
    if spec.split is not None:
        if spec.split not in splits:
            raise UserError(f"{spec.text}: no split '{spec.split}' (it has: "
                            f"{', '.join(splits)})")
        return splits[spec.split]
    found = next((name for name in default if name in splits), None)
    if found is None and len(splits) == 1:
        found = next(iter(splits))
    if found is None:
        raise UserError(f"{spec.text}: which split? it has {', '.join(splits)}; add "
                        f"{SPLIT_MARK}SPLIT, e.g. {spec.text}{SPLIT_MARK}{next(iter(splits))}")
    return splits[found]


def image_column(dataset, spec: DatasetSpec, named: str | None) -> str:
    """The column holding the images: ``named``, else the first ``Image`` feature."""
    features = dataset.features or {}
    if named:
        if named not in features:
            raise UserError(f"{spec.text}: no column '{named}' (it has: {', '.join(features)})")
        return named
    datasets = hf_datasets()
    found = next((name for name, f in features.items() if isinstance(f, datasets.Image)), None)
    if found is None:
        raise UserError(f"{spec.text}: no image column (no Image feature among "
                        f"{', '.join(features) or 'no columns'}); name it with --image-column")
    return found


def label_column(dataset, spec: DatasetSpec, named: str | None) -> tuple[str, list[str]]:
    """The column holding the labels and the class names: ``named``, else the first
    ``ClassLabel`` (a named column of other values: its distinct values, sorted)."""
    datasets = hf_datasets()
    features = dataset.features or {}
    if named and named not in features:
        raise UserError(f"{spec.text}: no column '{named}' (it has: {', '.join(features)})")
    name = named or next((n for n, f in features.items()
                          if isinstance(f, datasets.ClassLabel)), None)
    if name is None:
        raise UserError(f"{spec.text}: no label column (no ClassLabel feature among "
                        f"{', '.join(features)}); name it with --label-column")
    feature = features[name]
    if isinstance(feature, datasets.ClassLabel):
        return name, list(feature.names)
    values = sorted({str(v) for v in dataset.select_columns([name])[name]
                     if v is not None}) if isinstance(dataset, datasets.Dataset) else None
    if values is None:
        raise UserError(f"{spec.text}: the label column '{name}' is no ClassLabel; in a "
                        f"Parquet folder the classes must be a ClassLabel feature")
    return name, values


def undecoded(dataset, column: str, *others: str):
    """``dataset``'s ``column`` (and ``others``), its images as the file's bytes."""
    datasets = hf_datasets()
    return dataset.select_columns([column, *others]).cast_column(
        column, datasets.Image(decode=False))


def load_dataset_labeled(spec: DatasetSpec, default: tuple[str, ...], size: int,
                         channels: int, strict: bool, *,
                         columns: tuple[str | None, str | None] = (None, None)) -> ImageSet:
    """A split's labeled images at ``size`` with ``channels``; ``columns`` names the image
    and label columns (None: found). Rows without a label (-1) are left out, and counted."""
    dataset = pick_split(spec, default)
    image, (label, classes) = (image_column(dataset, spec, columns[0]),
                               label_column(dataset, spec, columns[1]))
    # A ClassLabel stores class indices (-1: none); a named column of values, their names.
    index = None if isinstance((dataset.features or {}).get(label), hf_datasets().ClassLabel) \
        else {name: i for i, name in enumerate(classes)}
    contents, names, labels, unlabeled = [], [], [], 0
    for row, values in enumerate(read_rows(undecoded(dataset, image, label))):
        value = values[label]
        target = -1 if value is None else value if index is None else index.get(str(value), -1)
        if target < 0:
            unlabeled += 1
            continue
        data, _ = image_bytes(values[image])
        contents.append(data)
        names.append(f"{spec.text} row {row}")
        labels.append(target)
    if unlabeled:
        log.info("%s: %d rows have no label and are left out", spec.text, unlabeled)
    if not names:
        raise UserError(f"{spec.text}: no labeled rows")
    return decode_images(names, labels, classes, size=size, channels=channels,
                         strict=strict, contents=contents)


def read_rows(dataset) -> Iterator[dict]:
    """The rows of a Dataset or IterableDataset, read ``READ_BATCH`` at a time (row by row
    inside a loader worker, datasets would split the rows among the workers itself, and each
    worker already reads shards of its own)."""
    for batch in dataset.iter(batch_size=READ_BATCH):
        yield from (dict(zip(batch, values)) for values in zip(*batch.values()))


def image_bytes(cell: dict | None) -> tuple[bytes | None, str]:
    """An undecoded image cell's bytes (read from its path where only that is stored), and
    what went wrong where there are none."""
    if not cell:
        return None, "no image"
    if cell.get("bytes"):
        return cell["bytes"], ""
    path = cell.get("path")
    if not path:
        return None, "no image bytes or path"
    try:
        return Path(path).read_bytes(), ""
    except OSError as err:
        return None, str(err)


def extension_of(data: bytes | None) -> str:
    """The image format of ``data`` as a file extension ('png', 'jpeg'...; '' where unknown)."""
    if not data:
        return ""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            kind = (picture.format or "").lower()
    except (OSError, SyntaxError, ValueError):
        return ""
    return {"jpeg": "jpg", "mpo": "jpg"}.get(kind, kind)


@dataclass(frozen=True)
class DatasetShard:
    """One shard of a streamed dataset: rows ``start:stop`` of a memory-mapped one, or the
    ``number``-th Parquet file of a streamed one."""

    spec: DatasetSpec
    split_default: tuple[str, ...]
    column: str
    number: int
    start: int = 0
    stop: int = 0

    @property
    def name(self) -> str:
        return f"{self.spec.text}[{self.number}]"

    def cells(self) -> Iterator[dict | None]:
        """The shard's image cells, in order: the same every time it is read."""
        dataset = pick_split(self.spec, self.split_default)
        if self.stop > self.start:
            dataset = dataset.select(range(self.start, self.stop))
        else:
            dataset = dataset.shard(num_shards=dataset.num_shards, index=self.number)
        for row in read_rows(undecoded(dataset, self.column)):
            yield row[self.column]


def dataset_shards(spec: DatasetSpec, default: tuple[str, ...], column: str | None,
                   max_images: int = 0) -> list[DatasetShard]:
    """The shards a streamed pass reads ``spec``'s split in: ``ROWS_PER_SHARD`` rows of a
    memory-mapped dataset, one Parquet file of a streamed one."""
    datasets = hf_datasets()
    dataset = pick_split(spec, default)
    column = image_column(dataset, spec, column)
    if isinstance(dataset, datasets.IterableDataset):
        if max_images:
            raise UserError("--max-images counts a folder's or a .npy's images; for a Parquet "
                            "dataset, give a folder with fewer files")
        return [DatasetShard(spec, default, column, n) for n in range(dataset.num_shards)]
    rows = min(len(dataset), max_images) if max_images else len(dataset)
    return [DatasetShard(spec, default, column, n, start, min(start + ROWS_PER_SHARD, rows))
            for n, start in enumerate(range(0, rows, ROWS_PER_SHARD))]
