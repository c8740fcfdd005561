"""The run directory: one place per run for config, splits, weights, checkpoints and metrics.

Every file is written to a temporary name, fsynced and renamed, so a run killed at any moment
never leaves a half-written file behind. Checkpoints and weight files carry a sha256 checked
on load; checkpoints load with ``weights_only=True`` (no pickle code runs).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import distributed
from .errors import CorruptFile, UserError

CONFIG = "config.yaml"
SPLITS = "splits.json"
MODEL = "model.safetensors"
MODEL_INFO = "model.json"
CHECKPOINT = "checkpoint.pt"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
TMP_SUFFIX = ".tmp"
CHECKPOINT_MAGIC = b"noisystudent-checkpoint sha256:"
LOCK = ".lock"
TIMINGS = "timings.json"
# Files a run writes before any step does work (and the time a failed start took): a rerun
# after a fix may replace them.
PLAN_FILES = ("plan.yaml", "plan.json")  # plan/replan.py: what the plan chose, and why
SETUP_FILES = (CONFIG, SPLITS, LOCK, TIMINGS, *PLAN_FILES)



def cache_root() -> Path:
    """Where the toolkit keeps what it computes once per machine (corruption sets, precision
    measurements): ``$NOISYSTUDENT_CACHE``, default ``~/.cache/noisystudent``."""
    return Path(os.environ.get("NOISYSTUDENT_CACHE", Path.home() / ".cache" / "noisystudent"))


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any],
                 every_rank: bool = False) -> None:
    """``write(tmp)`` then fsync and rename over ``path``: readers, and a run killed at any
    moment, see the old file or the new one, never a torn one. A failed write (a full disk)
    removes the temporary file, leaves ``path`` as it was and stops with one line.

    Under torchrun only rank 0 writes, unless ``every_rank`` (each rank's own shard)."""
    if not (every_rank or distributed.is_main()):
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write {path} ({err.strerror or err}); "
                        f"the previous {path.name}, if any, is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)  # makes the rename itself survive a power cut


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Temporary files left by a process killed mid-write; never valid, safe to delete."""
    if not distributed.is_main():
        return
    for tmp in Path(directory).glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_yaml(path: str | os.PathLike, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    if not distributed.is_main():
        return
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log; a line torn by a kill is dropped, not an error."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor],
                 every_rank: bool = False) -> None:
    """A safetensors file whose metadata carries the checksum of its tensors."""
    # safetensors refuses shared or non-contiguous storage; clone makes each tensor its own.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    metadata = {"sha256": tensors_digest(tensors)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), every_rank)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a torn file or a checksum mismatch is a CorruptFile.
    Files from elsewhere, without our checksum, load unchecked."""
    try:
        with safe_open(str(path), "pt") as f:
            expected = (f.metadata() or {}).get("sha256")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFile(f"{path} is not a readable safetensors file ({err})") from None
    if expected is not None and tensors_digest(tensors) != expected:
        raise CorruptFile(f"{path} is corrupt: its tensors do not match their checksum")
    return tensors


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save bytes behind a header line with their sha256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = CHECKPOINT_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    atomic_write(path, lambda tmp: tmp.write_bytes(header + payload))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by save_checkpoint, checked, then unpickled with weights_only=True
    (no code in the file can run). Anything else is a CorruptFile, never loaded."""
    data = Path(path).read_bytes()
    header, _, payload = data.partition(b"\n")
    if not header.startswith(CHECKPOINT_MAGIC):
        raise CorruptFile(f"{path} is not a noisystudent checkpoint (no checksum header)")
    if hashlib.sha256(payload).hexdigest().encode() != header[len(CHECKPOINT_MAGIC):]:
        raise CorruptFile(f"{path} is corrupt: its content does not match its checksum")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError: both mean "not valid"
        raise CorruptFile(f"{path} could not be loaded safely ({type(err).__name__})") from None


_held_locks: dict[Path, Any] = {}


@atexit.register
def _release_locks() -> None:
    for handle in _held_locks.values():
        handle.close()


def lock_run(run_dir: str | os.PathLike) -> None:
    """Hold ``run_dir`` for this process until it exits (or crashes: the kernel drops the
    lock with the process). Another process asking for it stops with one line naming the PID
    that holds it. Under torchrun rank 0 takes the job's one lock; taking it again in the
    same process is a no-op."""
    if not distributed.is_main():
        return
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): said (once a place), then not locked
        warnings.warn("this system has no fcntl: run directories are not locked, so two "
                      "processes given one run directory would both write it", stacklevel=2)
        return
    path = Path(run_dir).resolve() / LOCK
    if path in _held_locks:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UserError(f"{run_dir} is in use by {holder}; wait for it to end or stop it "
                        f"(one process per run directory)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}")
    handle.flush()
    _held_locks[path] = handle


def unlock_run(run_dir: str | os.PathLike) -> None:
    handle = _held_locks.pop(Path(run_dir).resolve() / LOCK, None)
    if handle is not None:
        handle.close()  # closing the file releases the lock


def holds_lock(function: Callable) -> Callable:
    """A run function ``function(config, out, ...)`` that releases ``out``'s lock (taken
    when it opens the run) when it returns or fails, so the same process can open it again."""
    @functools.wraps(function)
    def run(config, out, *args, **kwargs):
        try:
            return function(config, out, *args, **kwargs)
        finally:
            unlock_run(out)
    return run


def has_work(run_dir: str | os.PathLike) -> bool:
    """Whether a run (or any step inside it) has done work: any file besides the config,
    split and lock files written at its start."""
    return any(path.is_file() and path.name not in SETUP_FILES
               and not path.name.endswith(TMP_SUFFIX)
               for path in Path(run_dir).rglob("*"))


def require_run(run_dir: str | os.PathLike, *names: str) -> Path:
    """The run directory, checked to hold the named files."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"run directory not found: {run}")
    for name in names:
        if not (run / name).is_file():
            raise UserError(f"{run} has no {name}: is it a finished noisystudent run?")
    return run


def read_yaml(path: str | os.PathLike) -> Any:
    return yaml.safe_load(Path(path).read_text())
