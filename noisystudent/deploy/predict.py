"""``noisystudent predict``: the class and its probability for each image file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from noisystudent.core.device import resolve_device
from noisystudent.data.decode import read_image
from noisystudent.models.saved import load_trained
from noisystudent.models.transforms import CleanPipeline


@torch.no_grad()
def predict(run_dir: str | Path, images: list[str | Path], device: str = "auto",
            top_k: int = 1) -> list[dict]:
    """Per image: path, class, probability (and the top-k alternatives when top_k > 1)."""
    dev = resolve_device(device)
    trained = load_trained(run_dir, dev)
    channels, size = trained.info["stored_channels"], trained.info["stored_size"]
    batch = torch.from_numpy(np.stack([read_image(p, channels, size) for p in images])).to(dev)
    probs = trained.model(CleanPipeline(trained.spec)(batch)).float().softmax(1).cpu()
    top_p, top_i = probs.topk(min(top_k, probs.shape[1]), dim=1)
    results = []
    for path, p, i in zip(images, top_p.tolist(), top_i.tolist()):
        results.append({"path": str(path), "class": trained.classes[i[0]], "probability": p[0],
                        "top": [{"class": trained.classes[c], "probability": q}
                                for c, q in zip(i, p)]})
    return results
