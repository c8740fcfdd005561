"""The distill command's compression report: the teacher, the student trained without it
(``--baseline``) and the distilled student side by side: parameters, FLOPs, CPU latency in
PyTorch and ONNX Runtime (``deploy/cost.py``) and test top-1 (compression.md and .json)."""

from __future__ import annotations

from pathlib import Path

import torch

from noisystudent.core import runs
from noisystudent.core.config import DistillConfig
from noisystudent.core.device import resolve_precision
from noisystudent.deploy.cost import count_flops, cpu_latency_ms, onnx_latency_ms
from noisystudent.models.build import count_parameters
from noisystudent.models.saved import TrainedModel, load_trained

from .format import number, percent

COMPRESSION_MD = "compression.md"
COMPRESSION_JSON = "compression.json"


def _run_top1(run_dir: str | Path) -> float | None:
    path = Path(run_dir) / runs.METRICS
    return runs.read_json(path).get("test_top1") if path.is_file() else None


def compression_report(run_dir: Path, config: DistillConfig,
                       student_top1: float | None) -> str:
    """Teacher, student without a teacher (--baseline) and distilled student, side by side."""
    cpu = torch.device("cpu")
    dtype = resolve_precision(config.precision, cpu, training=False)
    entries = [("teacher", config.teacher, _run_top1(config.teacher))]
    if config.baseline:
        entries.append(("student without teacher", config.baseline, _run_top1(config.baseline)))
    entries.append(("distilled student", run_dir, student_top1))
    rows = [describe(name, load_trained(path, cpu), top1, dtype) for name, path, top1 in entries]
    runs.write_json(run_dir / COMPRESSION_JSON, rows)
    teacher, student = rows[0], rows[-1]
    text = (f"# Compression report\n\n{markdown_table(rows)}\n"
            f"FLOPs ratio teacher/student: {teacher['mflops'] / student['mflops']:.1f}x; "
            f"latency ratio @256: "
            f"{teacher['latency_ms_batch256'] / student['latency_ms_batch256']:.1f}x. "
            f"Latency measured on the CPU, median of repeats: PyTorch ({dtype or 'fp32'}) on "
            f"the model; ONNX Runtime (fp32) on the exported graph (`noisystudent export`: "
            f"uint8 images in, preprocessing included; n/a without the export extra).\n")
    runs.write_text(run_dir / COMPRESSION_MD, text)
    return text


def describe(name: str, trained: TrainedModel, test_top1: float | None,
             dtype: torch.dtype | None) -> dict:
    model, spec = trained.model, trained.spec
    onnx = onnx_latency_ms(trained.run_dir) or {}
    return {
        "name": name, "run": str(trained.run_dir), "model": trained.info["model"],
        "image_size": spec.size, "parameters": count_parameters(model),
        "mflops": count_flops(model, spec) / 1e6,
        "latency_ms_batch1": cpu_latency_ms(model, spec, 1, dtype),
        "latency_ms_batch256": cpu_latency_ms(model, spec, 256, dtype, repeats=3),
        "onnx_latency_ms_batch1": onnx.get(1), "onnx_latency_ms_batch256": onnx.get(256),
        "test_top1": test_top1,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | run | parameters | MFLOPs / image | PyTorch CPU ms @1 | PyTorch CPU ms "
             "@256 | ONNX Runtime ms @1 | ONNX Runtime ms @256 | test top-1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    for r in rows:
        top1 = percent(r["test_top1"])
        lines.append(f"| {r['name']}: {r['model']} @{r['image_size']} | {r['run']} | "
                     f"{r['parameters'] / 1e6:.2f} M | {r['mflops']:.1f} | "
                     f"{r['latency_ms_batch1']:.1f} | {r['latency_ms_batch256']:.0f} | "
                     f"{number(r.get('onnx_latency_ms_batch1'), 1)} | "
                     f"{number(r.get('onnx_latency_ms_batch256'), 0)} | {top1} |")
    return "\n".join(lines) + "\n"
