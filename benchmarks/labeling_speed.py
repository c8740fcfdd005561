"""Labeling speed: what a teacher's pseudo-labeling pass costs in PyTorch fp32, PyTorch bf16
(autocast) and ONNX Runtime fp32, per image, on this machine's CPU as the process sees it
(run it under `taskset -c 0` for one core).

    python benchmarks/labeling_speed.py NAME=RUN_DIR [NAME=RUN_DIR ...]

Each is a batch of 256 of the run's stored images (uint8 at the stored size) through what a
labeling runs: PyTorch resizes and normalises the batch (the clean pipeline) then runs the
model; ONNX Runtime runs the exported graph, whose preprocessing is inside it, with as many
threads as PyTorch uses. Median of 5 after a warm-up. Writes "Labeling speed" into
BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from noisystudent.core.device import autocast, cpu_kind  # noqa: E402
from noisystudent.deploy.export import export_onnx  # noqa: E402
from noisystudent.deploy.onnx_runtime import onnxruntime_module  # noqa: E402
from noisystudent.models.saved import load_trained  # noqa: E402
from noisystudent.models.transforms import CleanPipeline  # noqa: E402

CPU = torch.device("cpu")
BATCH, REPEATS = 256, 5


def median_seconds(run_once) -> float:
    times = []
    for i in range(REPEATS + 1):  # the first is a warm-up
        start = time.perf_counter()
        run_once()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(run: Path) -> dict[str, float]:
    """Images/s of each way to label, on one batch of the run's stored shape."""
    trained = load_trained(run, CPU)
    channels, size = trained.info["stored_channels"], trained.info["stored_size"]
    images = torch.from_numpy(np.random.default_rng(0).integers(
        0, 256, (BATCH, channels, size, size), dtype=np.uint8))
    pipeline, model = CleanPipeline(trained.spec), trained.model.eval()

    def torch_pass(dtype):
        def once():
            with torch.inference_mode(), autocast(CPU, dtype):
                model(pipeline(images))
        return once

    speeds = {"torch fp32": BATCH / median_seconds(torch_pass(None)),
              "torch bf16": BATCH / median_seconds(torch_pass(torch.bfloat16))}
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(run, Path(folder) / "model.onnx")["path"]
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name, array = session.get_inputs()[0].name, images.numpy()
        speeds["ONNX Runtime fp32"] = BATCH / median_seconds(
            lambda: session.run(None, {name: array}))
    return speeds


def main() -> None:
    rows = ["| run | model @ size | PyTorch fp32 | PyTorch bf16 | ONNX Runtime fp32 | fastest |",
            "| --- | --- | ---: | ---: | ---: | --- |"]
    for item in sys.argv[1:]:
        name, _, run = item.partition("=")
        speeds = measure(Path(run))
        trained = load_trained(Path(run), CPU)
        fastest = max(speeds, key=speeds.get)
        rows.append(f"| {name} | {trained.info['model']} @{trained.spec.size} | "
                    + " | ".join(f"{speeds[k]:,.0f}" for k in speeds) + f" | {fastest} |")
        print(rows[-1], flush=True)
    body = (f"Images/s of one labeling batch of {BATCH} (the run's stored uint8 images, resized "
            f"and normalised as the labeling does), median of {REPEATS} after a warm-up, on "
            f"{torch.get_num_threads()} thread(s) of this CPU ({cpu_kind()}).\n\n"
            + "\n".join(rows) + "\n")
    write_section("labeling-speed", "Labeling speed: PyTorch fp32, bf16 and ONNX Runtime",
                  body, seeds="the runs' own")


if __name__ == "__main__":
    main()
