"""Does labeling the teacher's to-label.csv pay against as many random labels? (issue 30)

Fashion-MNIST stands in for the human: its hidden true labels fill in the images a teacher's
``to-label.csv`` lists (``chosen.csv``), and as many images drawn at random from the same
unlabeled split (``random.csv``, written out as PNGs). Both are manifests for
``--extra-labeled``; ``benchmarks/label_next.sh`` runs the comparison.

    python benchmarks/label_next.py RUN/labels RUN/teacher --seed 0
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from noisystudent import runs
from noisystudent.data.fashion_mnist import load_fashion_mnist
from noisystudent.data.splits import load_split
from noisystudent.to_label import TO_LABEL_CSV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, help="a pseudo-label directory with to-label.csv")
    parser.add_argument("teacher", type=Path, help="the teacher run whose split it labeled")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draw")
    args = parser.parse_args()
    train = load_fashion_mnist("train")
    unlabeled = load_split(args.teacher / runs.SPLITS)["unlabeled"]
    with open(args.labels / TO_LABEL_CSV, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:  # "image I": the I-th image of the teacher's unlabeled split
        original = int(unlabeled[int(row["source"].split()[-1])])
        row["label"] = train.classes[int(train.labels[original])]
    write(args.labels / "chosen.csv", rows)

    folder = args.labels / "random"
    folder.mkdir(exist_ok=True)
    drawn = np.random.default_rng(args.seed).choice(unlabeled, size=len(rows), replace=False)
    random_rows = []
    for original in drawn.tolist():
        name = f"random/{original:05d}.png"
        Image.fromarray(train.images[original, 0].numpy()).save(args.labels / name)
        random_rows.append({"path": name,
                            "label": train.classes[int(train.labels[original])]})
    write(args.labels / "random.csv", random_rows)
    print(f"{args.labels / 'chosen.csv'} and {args.labels / 'random.csv'}: {len(rows)} each")


def write(path: Path, rows: list[dict]) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    runs.atomic_write(path, save)


if __name__ == "__main__":
    main()
