"""Reproducible labeled / val / unlabeled index splits, saved as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from noisystudent.core import runs
from noisystudent.core.errors import UserError

SPLIT_KEYS = ("labeled", "val", "unlabeled")


def make_split(
    labels: np.ndarray | torch.Tensor,
    labels_per_class: int | None,
    val_per_class: int = 0,
    seed: int = 0,
    val_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Per class, shuffle with `seed`; first labels_per_class -> labeled, next val_per_class -> val,
    rest -> unlabeled. labels_per_class None/0 means every non-val image is labeled.
    Images with label -1 (unknown) always go to unlabeled.

    Without val_per_class, ``val_fraction`` holds out that fraction of each class's labeled
    images (rounded, at least one where a class has two) as val: the labels pay for it, and
    the unlabeled pool is the same as without it."""
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    labels = np.asarray(labels).reshape(-1)
    if labels_per_class is not None and labels_per_class < 0:
        raise UserError(f"labels per class must be >= 0 (0 = all), got {labels_per_class}")
    if val_per_class < 0:
        raise UserError(f"validation images per class must be >= 0, got {val_per_class}")
    if not 0 <= val_fraction < 1:
        raise UserError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    all_labeled = not labels_per_class
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLIT_KEYS}
    parts["unlabeled"].append(np.flatnonzero(labels < 0))
    for c in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        need = val_per_class + (0 if all_labeled else labels_per_class)
        if len(idx) < need:
            raise UserError(
                f"class {int(c)} has only {len(idx)} images but {need} are needed "
                f"({labels_per_class or 0} labeled + {val_per_class} val); lower the counts"
            )
        if all_labeled:
            parts["val"].append(idx[:val_per_class])
            parts["labeled"].append(idx[val_per_class:])
        else:
            parts["labeled"].append(idx[:labels_per_class])
            parts["val"].append(idx[labels_per_class:need])
            parts["unlabeled"].append(idx[need:])
        if val_fraction and not val_per_class:
            labeled = parts["labeled"].pop()
            held = held_out(len(labeled), val_fraction)
            parts["val"].append(labeled[:held])
            parts["labeled"].append(labeled[held:])
    return {
        k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64)
        for k, v in parts.items()
    }


def held_out(labeled: int, fraction: float) -> int:
    """Validation images taken from a class's ``labeled`` images: the fraction, rounded, at
    least one where the class has two, and never the last one."""
    if not fraction or labeled < 2:
        return 0
    return min(labeled - 1, max(1, round(labeled * fraction)))


def save_split(path: str | Path, split: dict[str, np.ndarray], **meta) -> None:
    """Write the split (plus metadata such as seed, labels_per_class) as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(meta)
    doc.update({k: [int(i) for i in np.asarray(split[k]).reshape(-1)] for k in SPLIT_KEYS})
    runs.write_text(path, json.dumps(doc))  # readers never see a half-written file


def load_split(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise UserError(f"split file {path} does not exist; check the path") from e
    except (OSError, ValueError) as e:
        raise UserError(f"split file {path} is not valid JSON ({e}); recreate it") from e
    missing = [k for k in SPLIT_KEYS if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise UserError(f"split file {path} lacks {', '.join(missing)}; recreate it")
    return {k: np.asarray(doc[k], dtype=np.int64).reshape(-1) for k in SPLIT_KEYS}
