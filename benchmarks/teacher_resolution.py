"""The teacher's resolution as a lever of its own: the ImageNet-initialised Lite0 teacher
fine-tuned on the 1,000 labels at 32 / 64 / 96 / 128 px, and the pseudo-labels each gives.

    python benchmarks/teacher_resolution.py [--sizes 32 64 96 128] [--seed 0]

Fashion-MNIST is stored once at its native 28 px; each teacher resizes in its own input
pipeline. Per size: test top-1, training time (sum of epoch times), labeling time of the
~59,000 unlabeled images, pseudo-label accuracy (all, and on the selected, balanced set). The
runs live in runs/bench/ and are reused when finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, WORK, run, write_section  # noqa: E402

from noisystudent.labels.directory import read_summary  # noqa: E402


def teacher_and_labels(size: int, seed: int, epochs: int) -> dict:
    teacher = WORK / f"teacher-lite0-{size}px-seed{seed}"
    labels = WORK / f"teacher-lite0-{size}px-seed{seed}-labels"
    if not (teacher / "metrics.json").is_file():
        resume = ["--resume"] if (teacher / "config.yaml").is_file() else []
        run(CLI + ["train", "--model", "tf_efficientnet_lite0", "--pretrained", "offline",
                   "--image-size", str(size), "--epochs", str(epochs), "--seed", str(seed),
                   "--out", str(teacher), "--quiet", *resume])
    if not (labels / "summary.json").is_file():
        run(CLI + ["pseudo-label", "--teacher", str(teacher), "--out", str(labels), "--quiet"])
    epochs_log = [json.loads(line) for line in (teacher / "metrics.jsonl").read_text().split("\n")
                  if line.strip()]
    summary = read_summary(labels)  # labels reused from before the rename read as well
    return {"size": size,
            "test_top1": json.loads((teacher / "metrics.json").read_text())["test_top1"],
            "training_seconds": sum(e["seconds"] for e in epochs_log),
            "labeling_seconds": summary["labeling_seconds"],
            "pseudo_label_accuracy": summary["pseudo_label_accuracy"],
            "selected_accuracy": summary["selected_accuracy"], "selected": summary["selected"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        r = teacher_and_labels(size, args.seed, args.epochs)
        rows.append(f"| {size} px | {100 * r['test_top1']:.2f}% | {r['training_seconds']:.0f} s | "
                    f"{r['labeling_seconds']:.0f} s | {100 * r['pseudo_label_accuracy']:.2f}% | "
                    f"{100 * r['selected_accuracy']:.2f}% ({r['selected']:,}) |")
        print(rows[-1], flush=True)
    body = f"""`tf_efficientnet_lite0` from the offline ImageNet weights, fine-tuned on 100 labels
per class (seed {args.seed}'s split) for {args.epochs} epochs (AdamW, lr 2e-3, cosine, light
pad-crop and flip, `precision: auto`), then labeling the ~59,000 unlabeled images (clean view,
soft labels, threshold 0.3, class balancing). Fashion-MNIST is stored at 28 px; each teacher
resizes in its pipeline. Training time is the sum of its epoch times; labeling time the
labeling pass itself.

| teacher input | test top-1 | training | labeling | pseudo-label accuracy | selected set (images) |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}"""
    write_section("teacher-resolution", "Teacher resolution (100 labels per class)", body,
                  str(args.seed))


if __name__ == "__main__":
    main()
