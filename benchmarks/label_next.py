"""Does labeling the teacher's to-label.csv pay against as many random labels? (issue 30)

Fashion-MNIST stands in for the human: its hidden true labels fill in the images a teacher's
``to-label.csv`` lists (``chosen.csv``), and as many images drawn at random from the same
unlabeled split (``random.csv``, written out as PNGs). Both are manifests for
``--extra-labeled``; ``benchmarks/label_next.sh`` runs the comparison, and ``table`` writes
its section of BENCHMARKS.md from the runs.

    python benchmarks/label_next.py fill RUN/labels RUN/teacher --seed 0
    python benchmarks/label_next.py table runs/bench/label-next
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from noisystudent.core import runs  # noqa: E402
from noisystudent.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from noisystudent.data.splits import load_split  # noqa: E402
from noisystudent.labels.to_label import TO_LABEL_CSV  # noqa: E402

# What each arm added to the 100 labels per class: the arms label_next.sh may run.
ARMS = {"chosen": "100 to-label images", "random": "100 random images", "none": "nothing"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fill_parser = commands.add_parser("fill", help="write chosen.csv and random.csv")
    fill_parser.add_argument("labels", type=Path, help="a pseudo-label directory with to-label.csv")
    fill_parser.add_argument("teacher", type=Path, help="the teacher run whose split it labeled")
    fill_parser.add_argument("--seed", type=int, default=0, help="seed of the random draw")
    table_parser = commands.add_parser("table", help="write the BENCHMARKS.md section")
    table_parser.add_argument("out", type=Path, help="label_next.sh's OUT (sS/ARM/ runs)")
    args = parser.parse_args()
    if args.command == "fill":
        fill(args.labels, args.teacher, args.seed)
    else:
        table(args.out)


def fill(labels: Path, teacher: Path, seed: int) -> None:
    train = load_fashion_mnist("train")
    unlabeled = load_split(teacher / runs.SPLITS)["unlabeled"]
    with open(labels / TO_LABEL_CSV, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:  # "image I": the I-th image of the teacher's unlabeled split
        original = int(unlabeled[int(row["source"].split()[-1])])
        row["label"] = train.classes[int(train.labels[original])]
    write(labels / "chosen.csv", rows)

    folder = labels / "random"
    folder.mkdir(exist_ok=True)
    drawn = np.random.default_rng(seed).choice(unlabeled, size=len(rows), replace=False)
    random_rows = []
    for original in drawn.tolist():
        name = f"random/{original:05d}.png"
        Image.fromarray(train.images[original, 0].numpy()).save(labels / name)
        random_rows.append({"path": name,
                            "label": train.classes[int(train.labels[original])]})
    write(labels / "random.csv", random_rows)
    print(f"{labels / 'chosen.csv'} and {labels / 'random.csv'}: {len(rows)} each")


def table(out: Path) -> None:
    """A row per arm and seed (the teacher, the student, the model the run kept: test top-1),
    then each arm's mean ± std over the seeds."""
    seeds = sorted(out.glob("s*"), key=lambda d: int(d.name[1:]))
    budget = None
    lines = ["| added | seed | teacher | student | kept | wall |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    summary = {}
    for arm, added in ARMS.items():
        columns: dict[str, list[float]] = {"teacher": [], "student": [], "kept": [], "seed": []}
        for seed_dir in seeds:
            report = seed_dir / arm / "report.json"
            if not report.is_file():
                continue
            result = runs.read_json(report)
            budget = runs.read_json(seed_dir / arm / "plan.json")["budget_minutes"]
            minutes = sum(runs.read_json(seed_dir / arm / "timings.json").values()) / 60
            for name, value in zip(columns, (result["rows"][0]["test_top1"],
                                             result["rows"][-1]["test_top1"],
                                             result["final_test_top1"])):
                columns[name].append(100 * value)
            columns["seed"].append(int(seed_dir.name[1:]))
            lines.append(f"| {added} | {seed_dir.name[1:]} | {columns['teacher'][-1]:.2f}% | "
                         f"{columns['student'][-1]:.2f}% | {columns['kept'][-1]:.2f}% "
                         f"({result['final_role']}) | {minutes:.1f} min |")
        if columns["student"]:
            summary[added] = columns
    lines += ["", "| added | seeds | teacher | student | kept |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {added} | {len(c['student'])} | {spread(c['teacher'])} | "
              f"**{spread(c['student'])}** | {spread(c['kept'])} |" for added, c in summary.items()]
    chosen, drawn = summary.get(ARMS["chosen"]), summary.get(ARMS["random"])
    if chosen and drawn and chosen["seed"] == drawn["seed"]:  # the same seeds: paired
        lines += ["", "Chosen minus random, seed by seed (the same teacher's split): "
                  + "; ".join(difference(chosen, drawn, name)
                              for name in ("teacher", "student", "kept")) + "."]
    seed_list = " ".join(d.name[1:] for d in seeds)
    body = (f"Runs: `BUDGET={budget:g}m SEEDS=\"{seed_list}\" bash benchmarks/label_next.sh`. "
            f"Fashion-MNIST, 100 labels per class (10% held out for validation), plus 100 "
            f"labeled images; `self-train --budget {budget:g}m --iterations 1` (the plan's "
            f"teacher, then one student). Test top-1; kept: the model the run kept on "
            f"validation. Wall: the run's timings.json. Mean ± the sample standard deviation "
            f"over seeds.\n\n" + "\n".join(lines))
    write_section("label-next", "The images to label next", body, ", ".join(seed_list.split()))


def difference(chosen: dict, drawn: dict, name: str) -> str:
    values = [a - b for a, b in zip(chosen[name], drawn[name])]
    each = ", ".join(f"{value:+.2f}" for value in values)
    return f"{name} {spread(values, ' points', '+')} ({each})"


def spread(values: list[float], unit: str = "%", sign: str = "") -> str:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):{sign}.2f} ± {std:.2f}{unit}"


def write(path: Path, rows: list[dict]) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    runs.atomic_write(path, save)


if __name__ == "__main__":
    main()
