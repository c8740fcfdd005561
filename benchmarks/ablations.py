"""Ablations in the paper's spirit at 100 labels per class: one Noisy Student iteration from
the same supervised teacher, with one ingredient removed at a time.

    python benchmarks/ablations.py [--teacher RUN_DIR]

The teacher defaults to seed 0's teacher of benchmarks/label_efficiency.py (run that script
first, or pass --teacher); the "full" row is the unablated method run alongside, on the same
machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, ROOT, WORK, run, write_section  # noqa: E402

RECIPE = ROOT / "configs" / "fashion-mnist-1000.yaml"
VARIANTS = {  # name: (what changes, overrides); "full" is the reference, run alongside
    "full": ("full Noisy Student (nothing removed)", []),
    "no-randaugment": ("without RandAugment (pad-crop and flip only)",
                       ["--set", "student.augment=light"]),
    "no-dropout-sd": ("without dropout and stochastic depth",
                      ["--set", "student.drop_rate=0", "--set", "student.drop_path_rate=0"]),
    "no-noise": ("without any noise (no augmentation, dropout or stochastic depth)",
                 ["--set", "student.augment=none", "--set", "student.drop_rate=0",
                  "--set", "student.drop_path_rate=0"]),
    "hard-labels": ("hard (one-hot) instead of soft pseudo-labels",
                    ["--set", "pseudo_label.soft=false"]),
    "no-filter-balance": ("without confidence filtering and class balancing",
                          ["--set", "pseudo_label.threshold=0",
                           "--set", "pseudo_label.balance=false"]),
    "growing-student": ("growing student: Lite1 instead of the same-size Lite0",
                        ["--student-models", "tf_efficientnet_lite1"]),
}


def iteration_one(name: str, teacher: Path, flags: list[str]) -> dict:
    out = WORK / f"ablation-{name}"
    if not (out / "report.json").is_file():
        resume = ["--resume"] if (out / "config.yaml").is_file() else []
        run(CLI + ["self-train", str(RECIPE), "--out", str(out), "--quiet", "--iterations", "1",
                   "--teacher-run", str(teacher), "--no-corruptions", *flags, *resume])
    return json.loads((out / "report.json").read_text())["rows"][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="default: runs/bench/le-100-seed0/iter0-teacher")
    args = parser.parse_args()
    seed0 = WORK / "le-100-seed0"
    teacher = Path(args.teacher) if args.teacher else seed0 / "iter0-teacher"
    if not (teacher / "metrics.json").is_file():
        raise SystemExit(f"no finished teacher in {teacher}: run label_efficiency.py first")
    teacher_top1 = json.loads((teacher / "metrics.json").read_text())["test_top1"]
    results = {name: iteration_one(name, teacher, flags)
               for name, (_, flags) in VARIANTS.items()}
    full = results["full"]
    teacher_row = {"model": json.loads((teacher / "model.json").read_text())["model"],
                   "test_top1": teacher_top1}
    rows = [_row("supervised teacher (no self-training)", teacher_row, full)]
    rows += [_row(VARIANTS[name][0], result, full) for name, result in results.items()]
    shown = teacher.resolve().relative_to(ROOT) if teacher.resolve().is_relative_to(ROOT) \
        else teacher
    body = f"""One iteration from the teacher `{shown}` ({100 * teacher_top1:.2f}%), the recipe
`configs/fashion-mnist-1000.yaml` (student Lite0 @32, 600 steps of 64 labeled + 192
pseudo-labeled images), one ingredient changed per row. Test top-1 (%) on the 10,000 test
images; the last column is the change against the full method.

| variant | student | pseudo-label accuracy | test top-1 | vs full |
| --- | --- | ---: | ---: | ---: |
{chr(10).join(rows)}

A single seed: differences under about 0.3 points are within run-to-run noise (see the
seed spread in the label-efficiency table)."""
    write_section("ablations", "Ablations (100 labels per class)", body, "0")


def _row(label: str, result: dict, full: dict | None) -> str:
    delta = "-" if full is None else f"{100 * (result['test_top1'] - full['test_top1']):+.2f}"
    accuracy = result.get("pseudo_label_accuracy")
    return (f"| {label} | {result['model']} | "
            f"{'-' if accuracy is None else f'{100 * accuracy:.2f}'} | "
            f"{100 * result['test_top1']:.2f} | {delta} |")


if __name__ == "__main__":
    main()
