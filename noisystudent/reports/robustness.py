"""Robustness to common corruptions (ImageNet-C's 15 types x 5 severities) on the test set.

Corrupted test sets come from ``imagecorruptions-imaug`` (the PyPI ``imagecorruptions`` breaks
on numpy 2). They are generated once, with seeds fixed per (corruption, severity, chunk), on
all CPU cores, and cached as uint8 arrays; every model is then measured on identical images.
mCE follows Hendrycks & Dietterich: per corruption, the errors summed over severities divided
by the baseline model's, averaged over corruptions, x 100 (baseline = 100).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from noisystudent.core import runs
from noisystudent.core.errors import UserError
from noisystudent.data.loaders import ImageBatches
from noisystudent.models.inference import predict_logits
from noisystudent.models.saved import TrainedModel
from noisystudent.models.transforms import CleanPipeline

SEVERITIES = (1, 2, 3, 4, 5)
CORRUPTION_TYPES = 15  # ImageNet-C's common corruptions (``corruption_names()``)
MIN_SIDE = 32  # the corruption functions refuse smaller images


def corruption_names() -> list[str]:
    try:
        from imagecorruptions import get_corruption_names
    except ImportError:
        raise UserError("corruptions need the package imagecorruptions-imaug: "
                        "pip install imagecorruptions-imaug") from None
    return get_corruption_names("common")


def _corrupt_chunk(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """uint8 (n, H, W, C) -> corrupted uint8 (n, S, S, C), S = max(H, 32)."""
    from imagecorruptions import corrupt

    warnings.filterwarnings("ignore")  # the package's own deprecation noise
    np.random.seed(seed)
    side = max(MIN_SIDE, images.shape[1])
    out = []
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        if pil.size != (side, side):
            pil = pil.resize((side, side), Image.BILINEAR)
        extra = {"seed": seed + i} if name == "glass_blur" else {}
        result = corrupt(np.asarray(pil), severity=severity, corruption_name=name, **extra)
        if image.shape[-1] == 1:  # grayscale comes back H x W x 3
            result = np.asarray(Image.fromarray(result).convert("L"))[..., None]
        out.append(result)
    return np.stack(out).astype(np.uint8)


def corrupted_sets(images: torch.Tensor, names: list[str], quiet: bool = True,
                   workers: int | None = None) -> dict[tuple[str, int], torch.Tensor]:
    """Every (corruption, severity) version of the uint8 (N, C, H, W) images, cached on disk."""
    array = images.permute(0, 2, 3, 1).contiguous().numpy()
    key = hashlib.sha256(array.tobytes()).hexdigest()[:16]
    folder = runs.cache_root() / "corruptions" / key
    folder.mkdir(parents=True, exist_ok=True)
    result, missing = {}, []
    for name in names:
        for severity in SEVERITIES:
            path = folder / f"{name}-{severity}.npy"
            if path.is_file():
                result[(name, severity)] = torch.from_numpy(np.load(path))
            else:
                missing.append((name, severity))
    if missing:
        chunk = 500
        bar = tqdm(total=len(missing), desc="corrupting the test set", leave=False,
                   disable=quiet, dynamic_ncols=True)
        with ProcessPoolExecutor(workers or os.cpu_count()) as pool, bar:
            futures = {}
            for name, severity in missing:
                base = 1_000_003 * (names.index(name) + 1) + 10_007 * severity
                futures[(name, severity)] = [
                    pool.submit(_corrupt_chunk, array[i:i + chunk], name, severity, base + i)
                    for i in range(0, len(array), chunk)]
            for (name, severity), parts in futures.items():
                corrupted = np.concatenate([p.result() for p in parts]).transpose(0, 3, 1, 2)
                path = folder / f"{name}-{severity}.npy"
                runs.atomic_write(path, lambda tmp, a=corrupted: _save_npy(tmp, a))
                result[(name, severity)] = torch.from_numpy(np.ascontiguousarray(corrupted))
                bar.update()
    return result


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a path
        np.save(f, np.ascontiguousarray(array))


@torch.no_grad()
def corruption_errors(trained: TrainedModel, images: torch.Tensor, labels: torch.Tensor, *,
                      device: torch.device, dtype: torch.dtype | None, batch_size: int = 512,
                      quiet: bool = True) -> dict:
    """Top-1 error per corruption and severity, their mean, and the clean error."""
    names = corruption_names()
    sets = corrupted_sets(images, names, quiet)
    pipeline = CleanPipeline(trained.spec)

    bar = tqdm(total=len(sets) + 1, desc="corruption errors", leave=False, disable=quiet,
               dynamic_ncols=True)

    def error(batch_images: torch.Tensor) -> float:
        loader = ImageBatches(batch_images, labels, batch_size, device)
        logits = predict_logits(trained.model, pipeline, loader, device=device, dtype=dtype)
        bar.update()
        return float((logits.argmax(1) != labels).float().mean())

    with bar:
        errors = {name: [error(sets[(name, s)]) for s in SEVERITIES] for name in names}
        clean = error(images)
    return {"images": len(labels), "clean_error": clean, "errors": errors,
            "mean_error": float(np.mean([np.mean(v) for v in errors.values()]))}


def mean_corruption_error(errors: dict, baseline: dict) -> dict:
    """mCE and per-corruption CE relative to the baseline model (baseline = 100)."""
    if errors["images"] != baseline["images"]:
        raise UserError("the baseline was measured on a different number of corrupted images")
    ce = {name: 100.0 * sum(errors["errors"][name]) / max(sum(baseline["errors"][name]), 1e-12)
          for name in errors["errors"]}
    return {"mce": float(np.mean(list(ce.values()))), "ce": ce}
