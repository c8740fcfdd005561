"""Shipping the student: ONNX parity on the whole Fashion-MNIST test set and CPU latency,
PyTorch against ONNX Runtime, for finished runs; optionally a prediction from the .onnx file
in a fresh virtual environment holding only onnxruntime, numpy and pillow.

    python benchmarks/export.py NAME=RUN_DIR [NAME=RUN_DIR ...] [--fresh-venv]

Each run is exported with ``noisystudent export`` (into runs/bench/export/NAME.onnx). Parity:
fp32 PyTorch logits against ONNX Runtime's on the 10,000 test images (top-1 agreement, max
|logit difference|). Latency: median of repeats after a warm-up, batch 1 and 256, on this
machine's CPU; PyTorch on the model (fp32, and the inference precision ``auto`` picks), ONNX
Runtime on the exported graph (uint8 in, preprocessing included).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, write_section  # noqa: E402

from noisystudent.core.device import resolve_precision  # noqa: E402
from noisystudent.data.loaders import ImageBatches  # noqa: E402
from noisystudent.deploy.cost import cpu_latency_ms, onnx_latency_ms  # noqa: E402
from noisystudent.deploy.export import export_onnx  # noqa: E402
from noisystudent.deploy.onnx_runtime import OnnxModel  # noqa: E402
from noisystudent.models.inference import predict_logits  # noqa: E402
from noisystudent.models.saved import load_trained  # noqa: E402
from noisystudent.models.transforms import CleanPipeline  # noqa: E402
from noisystudent.reports.evaluate import test_set_of  # noqa: E402

CPU = torch.device("cpu")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parity(run: Path, onnx_path: Path) -> dict:
    trained = load_trained(run, CPU)
    test = test_set_of(trained)
    loader = ImageBatches(test.images, test.labels, 500, CPU)
    expected = predict_logits(trained.model, CleanPipeline(trained.spec), loader, device=CPU,
                              dtype=None).numpy()
    got = OnnxModel(onnx_path).logits(test.images.numpy(), batch_size=500)
    labels = test.labels.numpy()
    return {"images": len(labels), "agreement": float((got.argmax(1) == expected.argmax(1))
                                                      .mean()),
            "max_difference": float(np.abs(got - expected).max()),
            "top1_torch": float((expected.argmax(1) == labels).mean()),
            "top1_onnx": float((got.argmax(1) == labels).mean())}


def latency(run: Path) -> dict:
    trained = load_trained(run, CPU)
    auto = resolve_precision("auto", CPU, training=False)
    cpu_latency_ms(trained.model, trained.spec, 256, None, repeats=2)  # first touch, untimed
    result = {f"torch_fp32_{b}": cpu_latency_ms(trained.model, trained.spec, b, None,
                                                repeats=5 if b == 1 else 3) for b in (1, 256)}
    result.update({f"torch_auto_{b}": cpu_latency_ms(trained.model, trained.spec, b, auto,
                                                     repeats=5 if b == 1 else 3)
                   for b in (1, 256)})
    onnx = onnx_latency_ms(run)
    result.update({f"onnx_{b}": onnx[b] for b in (1, 256)})
    result["auto"] = str(auto).replace("torch.", "") if auto else "fp32"
    return result


def fresh_venv_predict(onnx_path: Path, image: Path) -> str:
    """A new venv with onnxruntime, numpy and pillow, this package without its dependencies,
    and one prediction from the .onnx file; returns the packages and the printed line."""
    with tempfile.TemporaryDirectory() as folder:
        venv = Path(folder) / "venv"
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, "onnxruntime", "numpy", "pillow"], check=True,
                       capture_output=True)
        subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, capture_output=True)
        listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list",
                                 "--format=freeze"], capture_output=True, text=True).stdout
        out = subprocess.run([str(venv / "bin" / "noisystudent"), "predict", str(onnx_path),
                              str(image), "--top-k", "2"], capture_output=True, text=True,
                             cwd=folder)
        if out.returncode:
            raise SystemExit(f"predict in the fresh venv failed: {out.stderr}")
    packages = ", ".join(line for line in listed.split() if line)
    return f"packages: {packages}\n\n    $ noisystudent predict {onnx_path.name} " \
           f"{image.name} --top-k 2\n    {out.stdout.strip()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("--fresh-venv", action="store_true")
    args = parser.parse_args()
    out = WORK / "export"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in args.runs:
        name, run = item.split("=", 1)
        path = out / f"{name.replace(' ', '-')}.onnx"
        export_onnx(run, path)
        say(f"{name}: exported {path}")
        p = parity(Path(run), path)
        say(f"{name}: parity {p}")
        lat = latency(Path(run))
        say(f"{name}: latency {lat}")
        rows.append((name, run, path, p, lat))
    table = ["| model | run | test images | top-1 agreement | max abs logit difference | "
             "top-1 PyTorch | top-1 ONNX Runtime |", "| --- | --- | ---: | ---: | ---: | ---: "
             "| ---: |"]
    for name, run, _, p, _ in rows:
        table.append(f"| {name} | {run} | {p['images']:,} | {100 * p['agreement']:.2f}% | "
                     f"{p['max_difference']:.1e} | {100 * p['top1_torch']:.2f}% | "
                     f"{100 * p['top1_onnx']:.2f}% |")
    auto = rows[0][4]["auto"]
    times = ["| model | PyTorch fp32 ms @1 | PyTorch " + auto + " ms @1 | ONNX Runtime ms @1 | "
             "PyTorch fp32 ms @256 | PyTorch " + auto + " ms @256 | ONNX Runtime ms @256 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, _, _, _, t in rows:
        times.append(f"| {name} | {t['torch_fp32_1']:.1f} | {t['torch_auto_1']:.1f} | "
                     f"{t['onnx_1']:.1f} | {t['torch_fp32_256']:.0f} | "
                     f"{t['torch_auto_256']:.0f} | {t['onnx_256']:.0f} |")
    body = ("Parity: fp32 PyTorch logits against ONNX Runtime's (CPU execution provider) on "
            "the whole test set (goal: agreement >= 99.9%, max difference <= 1e-3).\n\n"
            + "\n".join(table) + "\n\nCPU latency, median of repeats after a warm-up (ms per "
            "batch); PyTorch on the model with channels_last, ONNX Runtime on the exported "
            f"graph (uint8 in, preprocessing included), {torch.get_num_threads()} threads:\n\n"
            + "\n".join(times) + "\n")
    if args.fresh_venv:
        test_image = out / "test-0.png"
        from PIL import Image

        trained = load_trained(rows[0][1], CPU)
        Image.fromarray(test_set_of(trained).images[0, 0].numpy()).save(test_image)
        body += ("\nA prediction from the `.onnx` file in a fresh virtual environment "
                 "(`python -m venv`; `pip install onnxruntime numpy pillow`; this package "
                 "with `--no-deps`), the first test image (an ankle boot):\n\n"
                 + fresh_venv_predict(rows[0][2], test_image) + "\n")
    write_section("export", "Shipping the student: ONNX parity and latency", body, "0")


if __name__ == "__main__":
    main()
