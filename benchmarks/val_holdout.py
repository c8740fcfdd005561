"""What holding out 10% of the labels for validation costs the teacher: the ImageNet Lite0
teacher of a short budget (64 px, 30 epochs) trained on every label of L per class, and on
the 90% left after the validation split, for L = 10, 25, 100 and several seeds.

    python benchmarks/val_holdout.py [--labels 10 25 100] [--seeds 0 1 2]

The two arms of a seed draw the same L labels per class (the split holds the validation images
out of them), so the paired difference is the held-out labels' worth. The runs live in
runs/bench/ and are reused when finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, WORK, run, write_section  # noqa: E402

FRACTIONS = (0.0, 0.1)
HEADER = ("| labels a class | validation images at 10% | all labels trained | 10% held out "
          "| held out minus all (paired, per seed) |")


def teacher(labels: int, fraction: float, seed: int) -> dict:
    out = WORK / f"holdout-lite0-64px-{labels}pc-val{fraction:g}-seed{seed}"
    if not (out / "metrics.json").is_file():
        resume = ["--resume"] if (out / "config.yaml").is_file() else []
        run(CLI + ["train", "--model", "tf_efficientnet_lite0", "--pretrained", "offline",
                   "--image-size", "64", "--epochs", "30", "--labels-per-class", str(labels),
                   "--val-fraction", str(fraction), "--seed", str(seed), "--out", str(out),
                   "--quiet", *resume])
    return json.loads((out / "metrics.json").read_text())


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 25, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = []
    for labels in args.labels:
        tops = {f: [] for f in FRACTIONS}
        val_images = 0
        for seed in args.seeds:
            for fraction in FRACTIONS:
                metrics = teacher(labels, fraction, seed)
                tops[fraction].append(100 * metrics["test_top1"])
                val_images = metrics.get("val_images", val_images)
            print(labels, seed, [tops[f][-1] for f in FRACTIONS], flush=True)
        paired = [a - b for a, b in zip(tops[0.1], tops[0.0])]
        rows.append(f"| {labels} | {val_images} | {mean_std(tops[0.0])}% | {mean_std(tops[0.1])}% "
                    f"| {mean_std(paired)} ({', '.join(f'{d:+.2f}' for d in paired)}) |")
    body = f"""The plan's short-budget teacher (`tf_efficientnet_lite0` from the offline ImageNet
weights at 64 px, 30 epochs, AdamW, `precision: auto`) on Fashion-MNIST, trained on every one of
L labels a class, and on the 90% that a 10% validation split leaves (`--val-fraction 0.1`: the
held-out images are drawn from the same L). Test top-1 on the 10,000 test images.

{HEADER}
| ---: | ---: | ---: | ---: | --- |
{chr(10).join(rows)}"""
    write_section("val-holdout", "What the held-out 10% costs the teacher", body,
                  ", ".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
