"""``noisystudent evaluate``: top-1, per-class accuracy, confusion matrix (JSON and PNG), ECE."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: files only, no display needed
from tqdm.auto import tqdm

from noisystudent.core import runs
from noisystudent.core.config import shared_settings_of
from noisystudent.core.device import resolve_device, resolve_precision
from noisystudent.core.errors import UserError
from noisystudent.data.imageset import ImageSet
from noisystudent.data.loaders import ImageBatches
from noisystudent.data.sources import load_test_set
from noisystudent.models.inference import predict_logits
from noisystudent.models.saved import TrainedModel, load_trained
from noisystudent.models.transforms import CleanPipeline

from .metrics import classification_metrics
from .robustness import corruption_errors, mean_corruption_error

EVALUATION = "evaluation.json"
CORRUPTIONS = "corruptions.json"
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
    runs.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def test_set_of(trained: TrainedModel) -> ImageSet:
    """The test set a run was trained against, read alone, at the size the run stored."""
    settings = shared_settings_of(trained.config, channels=trained.info["stored_channels"])
    test_set = load_test_set(settings, trained.info["stored_size"], classes=trained.classes)
    if test_set is None:
        raise UserError(f"{trained.run_dir} was trained without test data; nothing to evaluate on")
    return test_set


def evaluate(run_dir: str | Path, *, device: str = "auto", quiet: bool = False,
             corruptions: bool = False, baseline: str | Path | None = None,
             corruption_images: int = 0) -> dict:
    """Evaluate a finished run on its test set; writes evaluation.json and confusion.png, and
    with ``corruptions`` corruptions.json (error per corruption and severity, mCE)."""
    dev = resolve_device(device)
    trained = load_trained(run_dir, dev)
    test_set = test_set_of(trained)
    dtype = resolve_precision(trained.config["precision"], dev, training=False)
    loader = ImageBatches(test_set.images, test_set.labels, trained.config["eval_batch_size"],
                          dev)
    logits = predict_logits(trained.model, CleanPipeline(trained.spec), loader, device=dev,
                            dtype=dtype, progress=not quiet, description="evaluate")
    result = classification_metrics(logits, test_set.labels, trained.classes)
    result["test_images"] = len(test_set)
    run = Path(run_dir)
    write_evaluation(result, trained.classes, run / EVALUATION, run / CONFUSION_PNG)
    if corruptions:
        result["corruptions"] = evaluate_corruptions(
            run, dev, quiet=quiet, baseline=baseline, images=corruption_images,
            trained=trained, test_set=test_set)
    return result


def evaluate_exported(model_path: str | Path, *, quiet: bool = False) -> dict:
    """An exported .onnx model through ONNX Runtime on the test set of the run it came from;
    writes MODEL.evaluation.json and MODEL.confusion.png beside it."""
    from noisystudent.deploy.onnx_runtime import OnnxModel

    model = OnnxModel(model_path)
    settings = shared_settings_of(model.settings, channels=model.stored_channels)
    test_set = load_test_set(settings, model.stored_size, classes=model.classes)
    if test_set is None:
        raise UserError(f"the run behind {model_path} had no test data; nothing to evaluate on")
    loader = ImageBatches(test_set.images, test_set.labels, 256, torch.device("cpu"))
    logits = [torch.from_numpy(model.logits(batch["images"].numpy()))
              for batch in tqdm(loader, desc="evaluate", leave=False, disable=quiet)]
    result = classification_metrics(torch.cat(logits), test_set.labels, model.classes)
    result["test_images"] = len(test_set)
    path = Path(model_path)
    write_evaluation(result, model.classes, path.with_suffix(".evaluation.json"),
                     path.with_suffix(".confusion.png"))
    return result


def write_evaluation(result: dict, classes: list[str], json_path: Path, png_path: Path) -> None:
    result["files"] = [str(json_path), str(png_path)]
    runs.write_json(json_path, result)
    plot_confusion(result["confusion"], classes, png_path)


def evaluate_corruptions(run_dir: str | Path, device: torch.device, *, quiet: bool = True,
                         baseline: str | Path | None = None, images: int = 0,
                         trained: TrainedModel | None = None,
                         test_set: ImageSet | None = None) -> dict:
    """Corruption errors of a run (cached in its corruptions.json), and mCE against a baseline
    run (measured the same way, on the same test images). ``trained`` and ``test_set``: the
    run's model and test set, when the caller has them loaded."""
    run = Path(run_dir)
    path = run / CORRUPTIONS
    measured = runs.read_json(path) if path.is_file() else None
    # Reuse the saved measurement when it covers the same images (0 asks for the whole set).
    fits = measured is not None and (measured["images"] == images if images
                                     else measured.get("whole_test_set", False))
    if not fits:
        trained = trained or load_trained(run, device)
        test_set = test_set or test_set_of(trained)
        count = images or len(test_set)
        if count > len(test_set):
            raise UserError(f"corruption_images={count} but the test set has {len(test_set)}")
        # A fixed, class-mixed subset when asked for fewer images: the first `count` images.
        dtype = resolve_precision(trained.config["precision"], device, training=False)
        measured = corruption_errors(trained, test_set.images[:count], test_set.labels[:count],
                                     device=device, dtype=dtype, quiet=quiet)
        measured.update(baseline=None, whole_test_set=count == len(test_set))
        runs.write_json(path, measured)  # before the baseline: it may be this very run
    if baseline is not None:
        reference = evaluate_corruptions(baseline, device, quiet=quiet,
                                         images=measured["images"], test_set=test_set)
        measured.update(mean_corruption_error(measured, reference), baseline=str(baseline))
    runs.write_json(path, measured)
    return measured
