"""What a model costs to run: FLOPs per image, CPU latency in PyTorch and, with the ``export``
extra, in ONNX Runtime on its exported graph (the distill command's compression report,
``reports/compression.py``, and the student's size check use them)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from noisystudent.core.device import autocast
from noisystudent.core.errors import UserError
from noisystudent.models.transforms import InputSpec


def count_flops(model: torch.nn.Module, spec: InputSpec) -> int:
    """Forward FLOPs for one image at the model's input size (PyTorch's own counter; a
    multiply-add counts as 2), on whatever device the model is."""
    device = next(model.parameters()).device
    x = torch.zeros(1, spec.channels, spec.size, spec.size, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def cpu_latency_ms(model: torch.nn.Module, spec: InputSpec, batch: int,
                   dtype: torch.dtype | None, repeats: int = 5) -> float:
    """Median wall time of one forward pass on the CPU, after a warm-up pass."""
    model = model.cpu().eval()
    x = torch.randn(batch, spec.channels, spec.size, spec.size)
    x = x.contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with autocast(torch.device("cpu"), dtype):
            model(x)
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def onnx_latency_ms(run_dir: Path, batches: tuple[int, ...] = (1, 256),
                    repeats: int = 5) -> dict[int, float] | None:
    """Median wall time of ONNX Runtime (CPU) on the run's exported graph (uint8 images at the
    stored size, preprocessing included), per batch size; None without the export extra."""
    from .export import export_onnx, require_export_extra

    try:
        require_export_extra()
    except UserError:
        return None
    from .onnx_runtime import OnnxModel

    with tempfile.TemporaryDirectory() as folder:
        model = OnnxModel(export_onnx(run_dir, Path(folder) / "model.onnx",
                                      every_rank=True)["path"])
        result = {}
        for batch in batches:
            shape = (batch, model.stored_channels, model.stored_size, model.stored_size)
            images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
            times = []
            for i in range(repeats + 1):  # the first run is a warm-up
                start = time.perf_counter()
                model.logits(images, batch_size=batch)
                if i:
                    times.append((time.perf_counter() - start) * 1000)
            result[batch] = statistics.median(times)
    return result
