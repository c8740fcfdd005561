"""Unlabeled images that stream from disk: a uint8 (N, C, H, W) ``.npy`` file read in blocks.

Rows are read with ``pread`` when a batch needs them, never mapped or loaded whole, so memory
stays flat whatever N is (1,000,000 images of 3x32x32 are 3 GB on disk, a few MB in memory).
``pack_folder`` turns a folder of images into such a file once; decoding is the costly part.
"""

from __future__ import annotations

import copy
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from noisystudent.core import runs
from noisystudent.core.errors import UserError

from .decode import UnreadableImage, decode_image
from .files import check_dir, find_images


class NpyImages:
    """A lazy, read-only view of the images in a .npy file (optionally a list of its rows).

    ``view[idx]`` is another lazy view; ``view.read(idx)`` returns the uint8 tensor."""

    def __init__(self, path: str | Path, rows: torch.Tensor | range | None = None):
        self.path = Path(path).expanduser()
        try:
            with open(self.path, "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                header = np.lib.format.read_array_header_1_0 if major == 1 \
                    else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = header(f)
                self.offset = f.tell()
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read {self.path} as a .npy array: {err}") from None
        if dtype != np.uint8 or len(shape) != 4 or shape[1] not in (1, 3) or fortran:
            raise UserError(f"{self.path} holds {dtype} {shape}; expected uint8 images "
                            "(N, C, H, W) with C = 1 or 3 (see noisystudent pack)")
        expected = self.offset + int(np.prod(shape))
        if self.path.stat().st_size < expected:
            raise UserError(f"{self.path} is truncated: {self.path.stat().st_size} bytes, "
                            f"{expected} expected")
        self.total, self.image_shape = shape[0], tuple(shape[1:])
        self.row_bytes = int(np.prod(self.image_shape))
        self.rows = rows

    def __len__(self) -> int:
        return self.total if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.image_shape)

    def _absolute(self, idx) -> torch.Tensor | range:
        """The file rows of ``idx``: a range for a slice of a contiguous view (nothing N-long
        is made, so a rank's share of 10 M rows costs nothing), else an int64 tensor."""
        if isinstance(idx, slice) and not isinstance(self.rows, torch.Tensor):
            return (range(self.total) if self.rows is None else self.rows)[idx]
        if isinstance(idx, slice):
            idx = torch.arange(len(self))[idx]
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
        if self.rows is None:
            return idx
        if isinstance(self.rows, range):
            return idx * self.rows.step + self.rows.start
        return self.rows[idx]

    def __getitem__(self, idx) -> NpyImages:
        view = copy.copy(self)  # same file and header, other rows; nothing is read
        view.rows = self._absolute(idx)
        return view

    def read(self, idx=None) -> torch.Tensor:
        """The rows ``idx`` of this view (all when None) as a uint8 tensor."""
        rows = self._absolute(slice(None) if idx is None else idx)
        rows = np.arange(rows.start, rows.stop, rows.step) if isinstance(rows, range) \
            else rows.numpy()
        out = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            # Runs of consecutive rows are read in one call (the common sequential case).
            start = 0
            while start < len(rows):
                stop = start + 1
                while stop < len(rows) and rows[stop] == rows[stop - 1] + 1:
                    stop += 1
                count = stop - start
                data = os.pread(fd, count * self.row_bytes,
                                self.offset + int(rows[start]) * self.row_bytes)
                out[start:stop] = np.frombuffer(data, np.uint8).reshape(count, self.row_bytes)
                start = stop
        finally:
            os.close(fd)
        return torch.from_numpy(out).view(len(rows), *self.image_shape)


# uint8 (N, C, H, W) images: in memory, or streamed from a .npy file.
Images = torch.Tensor | NpyImages


def rows_of(images: Images, idx: torch.Tensor) -> torch.Tensor:
    """A batch of image rows as a tensor, from an in-memory tensor or a lazy NpyImages."""
    return images.read(idx) if isinstance(images, NpyImages) else images[idx]


def pack_folder(folder: str | Path, out: str | Path, size: int, channels: int = 3,
                chunk: int = 4096) -> dict:
    """Decode every image below ``folder`` into a uint8 (N, C, size, size) .npy, a chunk at a
    time (memory stays flat); unreadable files are skipped and counted."""
    root = Path(folder).expanduser()
    check_dir(root, "image folder")
    files = find_images(root)
    if not files:
        raise UserError(f"no images found under {root}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_name(f".{out.name}.rows{runs.TMP_SUFFIX}")
    kept, skipped = 0, []
    def decode(path: Path) -> bytes | None:
        try:
            return decode_image(str(path), size, channels).transpose(2, 0, 1).tobytes()
        except UnreadableImage:
            return None

    try:
        with open(raw, "wb") as f, ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for start in range(0, len(files), chunk):
                batch = files[start:start + chunk]
                for path, row in zip(batch, pool.map(decode, batch)):
                    if row is None:
                        skipped.append(str(path))
                    else:
                        f.write(row)
                        kept += 1
    except OSError as err:
        raw.unlink(missing_ok=True)
        raise UserError(f"could not write {raw} ({err.strerror or err})") from None
    if not kept:
        raw.unlink(missing_ok=True)
        raise UserError(f"none of the {len(files)} images under {root} could be read")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable images: "
                      f"{', '.join(skipped[:10])}", stacklevel=2)

    def write(tmp: Path) -> None:
        header = {"descr": "|u1", "fortran_order": False, "shape": (kept, channels, size, size)}
        with open(tmp, "wb") as f, open(raw, "rb") as rows:
            np.lib.format.write_array_header_1_0(f, header)
            while block := rows.read(1 << 24):
                f.write(block)

    try:
        runs.atomic_write(out, write)
    finally:
        raw.unlink(missing_ok=True)
    return {"images": kept, "skipped": len(skipped), "shape": [kept, channels, size, size]}
