"""Pseudo-labeling at scale: throughput with 1 vs 2 processes (torchrun, gloo on CPU), and peak
memory while labeling 100,000 vs 1,000,000 unlabeled images streamed from a .npy file.

    python benchmarks/pseudo_label_scaling.py [--teacher RUN_DIR] [--sizes 100000 1000000]

Without --teacher, a Lite0 teacher is trained for one epoch (its accuracy does not matter
here: only speed and memory are measured). The unlabeled images are real Fashion-MNIST training
images, repeated to the wanted count, packed as uint8 (N, C, S, S) .npy files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, TORCHRUN, WORK, run, write_section  # noqa: E402


def teacher_run(path: str | None) -> Path:
    if path:
        return Path(path)
    teacher = WORK / "scaling-teacher"
    if not (teacher / "metrics.json").is_file():
        run(CLI + ["train", "--model", "tf_efficientnet_lite0", "--pretrained", "offline",
                   "--labels-per-class", "10", "--epochs", "1", "--quiet", "--out", str(teacher)])
    return teacher


def synthetic_npy(count: int, teacher: Path) -> Path:
    """``count`` real training images (repeated), written a block at a time."""
    from noisystudent.data.fashion_mnist import load_fashion_mnist

    info = json.loads((teacher / "model.json").read_text())
    path = WORK / f"unlabeled-{count}.npy"
    if path.is_file():
        return path
    source = load_fashion_mnist("train").images.numpy()
    shape = (count, info["stored_channels"], info["stored_size"], info["stored_size"])
    if source.shape[1:] != shape[1:]:
        raise SystemExit(f"the teacher's stored shape {shape[1:]} is not Fashion-MNIST's")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for start in range(0, count, len(source)):
            f.write(source[:min(len(source), count - start)].tobytes())
    tmp.replace(path)
    return path


def label(teacher: Path, unlabeled: Path, processes: int, name: str) -> dict:
    out = WORK / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    args = ["pseudo-label", "--teacher", str(teacher), "--unlabeled", str(unlabeled),
            "--out", str(out), "--threshold", "0", "--quiet"]  # every image is selected
    launcher = CLI if processes == 1 else TORCHRUN + [f"--nproc_per_node={processes}", "-m",
                                                      "noisystudent"]
    measured = run(launcher + args)
    summary = json.loads((out / "summary.json").read_text())
    return {**measured, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="a finished run to label with (default: train one)")
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 1_000_000])
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    teacher = teacher_run(args.teacher)
    model = json.loads((teacher / "model.json").read_text())["model"]
    small, large = (synthetic_npy(n, teacher) for n in args.sizes)

    one = label(teacher, small, 1, "scaling-1proc")
    two = label(teacher, small, 2, "scaling-2proc")
    big = label(teacher, large, 1, "scaling-large")
    rows = [
        f"| 1 process (2 threads) | {args.sizes[0]:,} | {one['images_per_s']:,.0f} | 1.00x | "
        f"{one['seconds']:.0f} s | {one['max_rss_mb']:,.0f} MB |",
        f"| 2 processes, torchrun (1 thread each) | {args.sizes[0]:,} | "
        f"{two['images_per_s']:,.0f} | {two['images_per_s'] / one['images_per_s']:.2f}x | "
        f"{two['seconds']:.0f} s | {two['max_rss_mb']:,.0f} MB (per process) |",
        f"| 1 process (2 threads) | {args.sizes[1]:,} | {big['images_per_s']:,.0f} | "
        f"{big['images_per_s'] / one['images_per_s']:.2f}x | {big['seconds']:.0f} s | "
        f"{big['max_rss_mb']:,.0f} MB |",
    ]
    growth = big["max_rss_mb"] - one["max_rss_mb"]
    row_bytes = int(np.prod(np.load(small, mmap_mode="r").shape[1:]))
    body = f"""Teacher `{model}` ({teacher}); unlabeled images streamed from uint8 .npy files
({large.stat().st_size / 2**20:,.0f} MB on disk for {args.sizes[1]:,} images). images/s is the
labeling pass itself (`labeling_seconds` in summary.json, slowest rank); wall time includes
starting Python, loading the teacher, selection and writing the shards.

| run | images | images/s | vs 1 process | wall | peak RSS |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

Peak RSS grows by {growth:,.0f} MB from {args.sizes[0]:,} to {args.sizes[1]:,} images (10x),
{growth * 2**20 / (args.sizes[1] - args.sizes[0]):,.0f} bytes per extra image: the per-image
results (logits, probabilities, confidence, class, selection), not the images ({row_bytes}
bytes each, read a batch at a time). About 0.7 GB of every figure is the Python, torch and
model runtime. Target: flat, at most 2 GB: {"met" if big['max_rss_mb'] <= 2048
else "NOT met"}."""
    title = ("Speed and memory: pseudo-labeling with 1 vs 2 processes, "
             "100,000 vs 1,000,000 images")
    write_section("pseudo-label-scaling", title, body, "teacher trained with seed 0")


if __name__ == "__main__":
    main()
