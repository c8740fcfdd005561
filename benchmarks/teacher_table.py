"""The teacher table behind the plan's teacher rule: model x resolution x length, each
teacher's labels with and without flip averaging, and the minutes each costs on this CPU.

    python benchmarks/teacher_table.py [--teachers lite0:64:30 lite0:96:30 ...] [--seed 0]
                                       [--label-images 20000]

Each teacher is the ImageNet-initialised EfficientNet-Lite (offline weights) fine-tuned as
the plan's teacher is: 100 labels per class with 10% held out for validation (900 trained
on), AdamW, `precision: auto`. Its labels are measured on the first N of the ~59,000
unlabeled images (the same N for every teacher, so the differences are paired), once from
the clean view and once averaged with the mirror (`--flip`). Minutes: the sum of the
training epochs, and the labeling rate scaled to the whole pile. The runs live in
runs/bench/ and are reused when finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, WORK, run, write_section  # noqa: E402

PILE = 59_000  # the unlabeled images of a 100-labels-a-class run
HEADER = ("| model | px | epochs | test top-1 | val top-1 | training min | labels "
          "| labels, flip-averaged | labeling min (clean / flip) "
          "| teacher + labels min (clean / flip) |")
MODELS = {"lite0": "tf_efficientnet_lite0", "lite1": "tf_efficientnet_lite1",
          "lite2": "tf_efficientnet_lite2"}


def teacher(model: str, size: int, epochs: int, seed: int) -> Path:
    out = WORK / f"table-{model}-{size}px-{epochs}ep-seed{seed}"
    if not (out / "metrics.json").is_file():
        resume = ["--resume"] if (out / "config.yaml").is_file() else []
        run(CLI + ["train", "--model", MODELS[model], "--pretrained", "offline",
                   "--image-size", str(size), "--epochs", str(epochs), "--val-fraction", "0.1",
                   "--seed", str(seed), "--out", str(out), "--quiet", *resume])
    return out


def labels(run_dir: Path, flip: bool, images: int) -> dict:
    out = run_dir.with_name(run_dir.name + ("-flip" if flip else "-clean") + f"-{images}")
    if not (out / "summary.json").is_file():
        run(CLI + ["pseudo-label", "--teacher", str(run_dir), "--out", str(out), "--quiet",
                   "--max-images", str(images), "--to-label", "0",
                   "--flip" if flip else "--no-flip"])
    return json.loads((out / "summary.json").read_text())


def row(spec: str, seed: int, images: int) -> str:
    model, size, epochs = spec.split(":")
    run_dir = teacher(model, int(size), int(epochs), seed)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs_log = [json.loads(line) for line in
                  (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    training = sum(e["seconds"] for e in epochs_log)
    clean, flipped = labels(run_dir, False, images), labels(run_dir, True, images)
    minutes = [PILE / s["images_per_s"] / 60 for s in (clean, flipped)]
    return (f"| {MODELS[model]} | {size} | {epochs} | {100 * metrics['test_top1']:.2f}% | "
            f"{100 * metrics['val_top1']:.0f}% | {training / 60:.1f} | "
            f"{100 * clean['pseudo_label_accuracy']:.2f}% | "
            f"{100 * flipped['pseudo_label_accuracy']:.2f}% | "
            f"{minutes[0]:.1f} / {minutes[1]:.1f} | "
            f"{training / 60 + minutes[0]:.1f} / {training / 60 + minutes[1]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+",
                        default=["lite0:64:30", "lite0:96:30", "lite0:96:15", "lite0:128:30",
                                 "lite1:96:30"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-images", type=int, default=20_000)
    args = parser.parse_args()
    rows = []
    for spec in args.teachers:
        rows.append(row(spec, args.seed, args.label_images))
        print(rows[-1], flush=True)
    body = f"""Each teacher fine-tuned from the offline ImageNet weights on Fashion-MNIST's 100
labels a class with 10% held out (900 trained on, 100 for validation; seed {args.seed}'s split),
AdamW at lr 2e-3 with a cosine schedule, light pad-crop and flip, `precision: auto`. Labels
measured on the first {args.label_images:,} unlabeled images (the same images for every row),
from the clean view and averaged with the mirror (`pseudo-label --flip`). Minutes: the sum of the
training epochs; labeling at the measured rate scaled to the whole pile of {PILE:,} images.

{HEADER}
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}"""
    write_section("teacher-table", "The teacher table behind the plan", body, str(args.seed))


if __name__ == "__main__":
    main()
