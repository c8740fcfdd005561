"""What a compressed model costs: parameters, FLOPs, CPU latency; and the report table."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .device import autocast
from .inference import TrainedModel
from .models import count_parameters
from .transforms import InputSpec


def count_flops(model: torch.nn.Module, spec: InputSpec) -> int:
    """Forward FLOPs for one image at the model's input size (PyTorch's own counter; a
    multiply-add counts as 2)."""
    x = torch.zeros(1, 3, spec.size, spec.size)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.cpu()(x)
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def cpu_latency_ms(model: torch.nn.Module, spec: InputSpec, batch: int,
                   dtype: torch.dtype | None, repeats: int = 5) -> float:
    """Median wall time of one forward pass on the CPU, after a warm-up pass."""
    model = model.cpu().eval()
    x = torch.randn(batch, 3, spec.size, spec.size).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with autocast(torch.device("cpu"), dtype):
            model(x)
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def describe(name: str, trained: TrainedModel, test_top1: float | None,
             dtype: torch.dtype | None) -> dict:
    model, spec = trained.model, trained.spec
    return {
        "name": name, "run": str(trained.run_dir), "model": trained.info["model"],
        "image_size": spec.size, "parameters": count_parameters(model),
        "mflops": count_flops(model, spec) / 1e6,
        "latency_ms_batch1": cpu_latency_ms(model, spec, 1, dtype),
        "latency_ms_batch256": cpu_latency_ms(model, spec, 256, dtype, repeats=3),
        "test_top1": test_top1,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | run | parameters | MFLOPs / image | CPU ms @1 | CPU ms @256 | test top-1 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        top1 = f"{100 * r['test_top1']:.2f}%" if r["test_top1"] is not None else "n/a"
        lines.append(f"| {r['name']}: {r['model']} @{r['image_size']} | {r['run']} | "
                     f"{r['parameters'] / 1e6:.2f} M | {r['mflops']:.1f} | "
                     f"{r['latency_ms_batch1']:.1f} | {r['latency_ms_batch256']:.0f} | {top1} |")
    return "\n".join(lines) + "\n"
