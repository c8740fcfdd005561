"""``noisystudent evaluate``: top-1, per-class accuracy, confusion matrix (JSON and PNG), ECE."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: files only, no display needed

from . import runs
from .data.sources import load_train_and_test
from .engine import InMemoryLoader, predict_logits, resolve_device, resolve_precision
from .errors import UserError
from .inference import load_trained
from .metrics import classification_metrics
from .transforms import CleanPipeline

EVALUATION = "evaluation.json"
CONFUSION_PNG = "confusion.png"


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path) -> None:
    counts = torch.tensor(matrix, dtype=torch.float)
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = max(5.0, 0.55 * len(classes) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j] > 0:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def evaluate(run_dir: str | Path, device: str = "auto", quiet: bool = False) -> dict:
    """Evaluate a finished run on its test set; writes evaluation.json and confusion.png."""
    dev = resolve_device(device)
    trained = load_trained(run_dir, dev)
    cfg = trained.config
    _, test_set = load_train_and_test(cfg["data"], cfg["image_size"], cfg["channels"],
                                      cfg["strict"], cfg["data_dir"], cfg["test_data"])
    if test_set is None:
        raise UserError(f"{run_dir} was trained without test data; nothing to evaluate on")
    dtype = resolve_precision(cfg["precision"], dev, training=False)
    loader = InMemoryLoader(test_set.images, test_set.labels, cfg["eval_batch_size"], dev)
    logits = predict_logits(trained.model, CleanPipeline(trained.spec), loader, dev, dtype,
                            not quiet, "evaluate")
    result = classification_metrics(logits, test_set.labels, trained.classes)
    result["test_images"] = len(test_set)
    run = Path(run_dir)
    runs.write_json(run / EVALUATION, result)
    plot_confusion(result["confusion"], trained.classes, run / CONFUSION_PNG)
    return result
