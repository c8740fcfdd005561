"""Predictions from an exported ``model.onnx`` with ONNX Runtime, numpy and Pillow only: no torch,
no training dependencies. The preprocessing is inside the graph (uint8 in, logits out); the
class names and the stored image size and channels are in the model's metadata. Its command
line is ``python -m noisystudent.deploy`` (``cli.py``); ``noisystudent predict`` takes an
``.onnx`` file too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from noisystudent.core.errors import UserError
from noisystudent.data.decode import read_image

# Metadata keys written by ``noisystudent export`` (deploy/export.py).
CLASSES, STORED_SIZE, STORED_CHANNELS = "classes", "stored_size", "stored_channels"
SETTINGS = "settings"
BATCH = 256


def onnxruntime_module():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("running an .onnx model needs onnxruntime: pip install onnxruntime "
                        "(or pip install -e '.[export]' in a checkout)") from None
    return onnxruntime


class OnnxModel:
    """An exported model in ONNX Runtime on the CPU: uint8 (N, C, S, S) images -> logits."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        ort = onnxruntime_module()
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for a bad file
            raise UserError(f"cannot load {path} as an ONNX model: "
                            f"{str(err).splitlines()[0]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in (CLASSES, STORED_SIZE, STORED_CHANNELS) if k not in meta]
        if missing:
            raise UserError(f"{path} was not exported by noisystudent (metadata lacks "
                            f"{', '.join(missing)})")
        self.path = path
        self.classes: list[str] = json.loads(meta[CLASSES])
        self.stored_size, self.stored_channels = int(meta[STORED_SIZE]), int(meta[STORED_CHANNELS])
        self.settings: dict = json.loads(meta.get(SETTINGS, "{}"))
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """fp32 logits of uint8 images stored the way the run stored them."""
        chunks = [self.session.run(None, {self.input_name: images[i:i + batch_size]})[0]
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.empty((0, len(self.classes)), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict_onnx(model_path: str | Path, images: Sequence[str | Path],
                 top_k: int = 1) -> list[dict]:
    """Per image: path, class, probability and the top-k list, as ``predict`` gives them."""
    model = OnnxModel(model_path)
    batch = np.stack([read_image(p, model.stored_channels, model.stored_size) for p in images])
    probs = softmax(model.logits(batch).astype(np.float64))
    k = min(top_k, probs.shape[1])
    results = []
    for path, row in zip(images, probs):
        top = np.argsort(-row, kind="stable")[:k]
        results.append({"path": str(path), "class": model.classes[top[0]],
                        "probability": float(row[top[0]]),
                        "top": [{"class": model.classes[c], "probability": float(row[c])}
                                for c in top]})
    return results


def format_predictions(results: list[dict], as_json: bool = False) -> str:
    """One line per image (path, class, probability, then the alternatives), or JSON."""
    if as_json:
        return json.dumps(results, indent=2)
    lines = []
    for r in results:
        alternatives = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"][1:])
        extra = f"  ({alternatives})" if alternatives else ""
        lines.append(f"{r['path']}\t{r['class']}\t{r['probability']:.4f}{extra}")
    return "\n".join(lines)
