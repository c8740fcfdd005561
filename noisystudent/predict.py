"""``noisystudent predict``: the class and its probability for each image file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data.images import UnreadableImage, open_image, resize_center_crop
from .device import resolve_device
from .errors import UserError
from .inference import load_trained
from .transforms import CleanPipeline


def read_for_model(path: str | Path, channels: int, size: int) -> torch.Tensor:
    """One image file as the uint8 (C, H, W) tensor the run's training images were stored as."""
    if not Path(path).is_file():
        raise UserError(f"image not found: {path}")
    try:
        img = resize_center_crop(open_image(path, channels), size)
    except UnreadableImage as err:
        raise UserError(f"cannot read image {path}: {err}") from None
    array = np.asarray(img, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


@torch.no_grad()
def predict(run_dir: str | Path, images: list[str | Path], device: str = "auto",
            top_k: int = 1) -> list[dict]:
    """Per image: path, class, probability (and the top-k alternatives when top_k > 1)."""
    dev = resolve_device(device)
    trained = load_trained(run_dir, dev)
    channels, size = trained.info["stored_channels"], trained.info["stored_size"]
    batch = torch.stack([read_for_model(p, channels, size) for p in images]).to(dev)
    probs = trained.model(CleanPipeline(trained.spec)(batch)).float().softmax(1).cpu()
    top_p, top_i = probs.topk(min(top_k, probs.shape[1]), dim=1)
    results = []
    for path, p, i in zip(images, top_p.tolist(), top_i.tolist()):
        results.append({"path": str(path), "class": trained.classes[i[0]], "probability": p[0],
                        "top": [{"class": trained.classes[c], "probability": q}
                                for c, q in zip(i, p)]})
    return results
