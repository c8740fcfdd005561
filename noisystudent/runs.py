"""The run directory: one place per run for config, splits, weights, checkpoints and metrics.

Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file behind; checkpoints load with ``weights_only=True`` (no pickle code runs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from .errors import UserError

CONFIG = "config.yaml"
SPLITS = "splits.json"
MODEL = "model.safetensors"
MODEL_INFO = "model.json"
CHECKPOINT = "checkpoint.pt"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_yaml(path: str | os.PathLike, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> None:
    # safetensors refuses shared or non-contiguous storage; clone makes each tensor its own.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    _atomic(Path(path), lambda tmp: save_file(tensors, str(tmp)))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    _atomic(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


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
