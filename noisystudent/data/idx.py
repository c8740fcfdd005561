"""Reader for the IDX format used by (Fashion-)MNIST, gzipped or raw."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from noisystudent.core.errors import UserError

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    try:
        if head == b"\x1f\x8b":  # gzip magic, whatever the file is called
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}; re-download it") from e


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file into an array with native byte order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"IDX file not found: {path}")
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number); re-download it")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise UserError(f"{path}: unknown IDX data type 0x{code:02x}; re-download it")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: IDX header is truncated; re-download it")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(
            f"{path}: IDX payload is {len(data) - header} bytes, expected {expected} "
            f"for shape {dims}; the file is truncated or corrupt, re-download it"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)
