"""A labeling's logits through ONNX Runtime: the teacher exported to a private ``.onnx`` file
(checked against PyTorch on export), then every batch of stored uint8 images through it. On
one core of a Xeon it labeled 1.6-1.9x as fast as PyTorch in bf16 and 3.1-3.8x as fast as in
fp32, the precision an AVX2-only CPU trains in (BENCHMARKS.md, "Labeling speed"), and its
fp32 logits are PyTorch's to within the export's parity bar.

Used where the labeling runs on the CPU and the export extra is installed (``runtime:
auto``); a batch the graph cannot take (another stored size) goes through PyTorch.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .export import export_onnx, require_export_extra

log = logging.getLogger(__name__)


# One core of a Xeon (AMX), 30,000 Fashion-MNIST images through Lite0 @64, 2026-12-07: PyTorch
# fp32 labeled 359 images/s, bf16 693, ONNX Runtime 1,186 after an export of about 9 s
# (BENCHMARKS.md, "Labeling through ONNX Runtime"); the labeling-speed benchmark's lows:
SPEEDUP = {"fp32": 3.1, "bf16": 1.6}  # ONNX Runtime's images/s over PyTorch's in that dtype
EXPORT_SECONDS = 10.0  # exporting the teacher and checking the file against PyTorch
# The images (times views) from which the export pays for itself under ``runtime: auto``:
# about 4,600 against fp32 and 15,000 against bf16 at the rates above.
PAYS_FROM = {"fp32": 5_000, "bf16": 15_000}


def usable(runtime: str, device: torch.device, images: int,
           dtype: torch.dtype | None) -> bool:
    """Whether a labeling of ``images`` views with ``runtime`` ("auto", "torch",
    "onnxruntime") on ``device``, PyTorch labeling in ``dtype``, runs in ONNX Runtime: asked
    for, or "auto" on a CPU with the export extra installed where the export pays."""
    if runtime == "torch" or (runtime == "auto" and device.type != "cpu"):
        return False
    if runtime == "onnxruntime":
        require_export_extra()  # asked for by name: a one-line error where it is missing
        return True
    if images < PAYS_FROM[dtype_name(dtype)]:
        return False
    try:
        require_export_extra()
    except Exception:  # noqa: BLE001 - the extra is optional: PyTorch labels instead
        return False
    return True


def dtype_name(dtype: torch.dtype | None) -> str:
    """The PyTorch labeling's dtype as SPEEDUP names it (fp16 is a GPU's, never ONNX's)."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


class OnnxLabeler:
    """The teacher run's model in ONNX Runtime on as many threads as PyTorch uses: logits of
    uint8 (N, C, S, S) batches at the run's stored size."""

    def __init__(self, run: Path):
        import onnxruntime

        start = time.monotonic()
        self._folder = tempfile.TemporaryDirectory(prefix="noisystudent-labeler-")
        path = Path(export_onnx(run, Path(self._folder.name) / "teacher.onnx",
                                every_rank=True)["path"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape  # (batch, C, S, S)
        self.input_name, self.shape = self.session.get_inputs()[0].name, tuple(shape[1:])
        log.info("labeling through ONNX Runtime (exported in %.1f s)", time.monotonic() - start)

    def takes(self, images: torch.Tensor) -> bool:
        return images.dtype == torch.uint8 and tuple(images.shape[1:]) == self.shape

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0]).float()

    def close(self) -> None:
        self._folder.cleanup()


def iter_onnx_logits(labeler: OnnxLabeler, fallback, batches: Iterable[dict], *, flip: bool,
                     progress: bool = False, description: str = "predict"
                     ) -> Iterator[tuple[dict, torch.Tensor]]:
    """(batch, its fp32 logits) for every batch, as ``models.inference.iter_logits`` gives
    them: ``flip`` averages each image's logits with its mirror's. A batch the graph cannot
    take goes to ``fallback(batch)``, PyTorch's logits."""
    for batch in tqdm(batches, desc=description, leave=False, disable=not progress):
        images = batch["images"]
        if not labeler.takes(images):
            yield batch, fallback(batch)
            continue
        logits = labeler.logits(images)
        if flip:
            logits = (logits + labeler.logits(images.flip(3))) / 2
        yield batch, logits
