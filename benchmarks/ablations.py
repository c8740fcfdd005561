"""Ablations of the CPU recipe at 100 labels per class: one Noisy Student iteration from the
recipe's own teacher, with one ingredient removed or swapped at a time.

    python benchmarks/ablations.py [--seeds 0 1 2] [--only no-noise hard-labels] [--passes 6]

Per seed, the teacher is the recipe's (configs/fashion-mnist-1000-cpu.yaml: Lite0 at 96 px),
trained once into runs/bench/cpu-teacher-seed{S}/; the 32 px teacher of the "teacher-32px"
row is benchmarks/teacher_resolution.py's. Every row is student 1 of the recipe (12 passes,
or --passes for a cheaper search) with the row's change, and the "full" row, nothing
changed, runs alongside on the same machine. Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, ROOT, WORK, config_teacher, run, write_section  # noqa: E402
from teacher_resolution import teacher_and_labels  # noqa: E402

RECIPE = ROOT / "configs" / "fashion-mnist-1000-cpu.yaml"
IMAGENET_STUDENT = [  # the earlier Lite0 recipe's student (fashion-mnist-1000-cpu-lite0.yaml)
    "--student-models", "tf_efficientnet_lite0", "--set", "student.pretrained=offline",
    "--set", "student.image_size=32", "--set", "student.in_chans=3",
    "--set", "student.optimizer=adamw", "--set", "student.lr=0.002",
    "--set", "student.weight_decay=0.02", "--set", "student.warmup_epochs=1",
    "--set", "student.drop_rate=0.3", "--set", "student.drop_path_rate=0.2"]
VARIANTS = {  # name: (what changes, overrides); "full" is the reference, run alongside
    "full": ("full recipe (nothing removed)", []),
    "no-noise": ("without any noise (no augmentation, dropout or stochastic depth)",
                 ["--set", "student.augment=none", "--set", "student.drop_rate=0",
                  "--set", "student.drop_path_rate=0"]),
    "no-randaugment": ("without RandAugment and Cutout (pad-crop and flip only)",
                       ["--set", "student.augment=light"]),
    "no-dropout-sd": ("without dropout and stochastic depth",
                      ["--set", "student.drop_rate=0", "--set", "student.drop_path_rate=0"]),
    "hard-labels": ("hard (one-hot) instead of soft pseudo-labels",
                    ["--set", "pseudo_label.soft=false"]),
    "no-filter-balance": ("without confidence filtering and class balancing",
                          ["--set", "pseudo_label.threshold=0",
                           "--set", "pseudo_label.balance=false"]),
    "imagenet-student": ("ImageNet-initialised Lite0 @32 student instead of cifar_resnet20 @28",
                         IMAGENET_STUDENT),
    "teacher-32px": ("teacher at 32 px instead of 96 px", []),
}


def recipe_teacher(seed: int) -> Path:
    return config_teacher(RECIPE, WORK / f"cpu-teacher-seed{seed}", seed)


def iteration_one(name: str, seed: int, passes: float | None) -> dict:
    if name == "teacher-32px":
        teacher_and_labels(32, seed, 30)
        teacher = WORK / f"teacher-lite0-32px-seed{seed}"
    else:
        teacher = recipe_teacher(seed)
    length = [] if passes is None else ["--set", f"student.passes={passes}"]
    out = WORK / f"ablation-cpu-{name}-seed{seed}" if passes is None \
        else WORK / f"ablation-cpu-{name}-{passes:g}p-seed{seed}"
    if not (out / "report.json").is_file():
        resume = ["--resume"] if (out / "config.yaml").is_file() else []
        run(CLI + ["self-train", str(RECIPE), "--out", str(out), "--quiet", "--iterations", "1",
                   "--seed", str(seed), "--teacher-run", str(teacher), "--no-corruptions",
                   *VARIANTS[name][1], *length, *resume])
    return json.loads((out / "report.json").read_text())["rows"][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="rows to run (full always runs)")
    parser.add_argument("--passes", type=float, default=None,
                        help="student length for a cheaper search (default: the recipe's)")
    args = parser.parse_args()
    names = ["full"] + [n for n in args.only if n != "full"]
    results = {n: [iteration_one(n, s, args.passes) for s in args.seeds] for n in names}
    full = [r["test_top1"] for r in results["full"]]
    rows = []
    for name in names:
        top1 = [r["test_top1"] for r in results[name]]
        labels = [r["pseudo_label_accuracy"] for r in results[name]]
        delta = [100 * (a - b) for a, b in zip(top1, full)]
        rows.append(f"| {VARIANTS[name][0]} | {results[name][0]['model']} | {_mean(labels)} | "
                    f"{_mean(top1)} | {'-' if name == 'full' else _spread(delta, '+.2f')} |")
    length = "the recipe's student 1 length (12 passes)" if args.passes is None \
        else f"{args.passes:g} passes (a cheaper search than the recipe's 12)"
    body = f"""One iteration of `configs/fashion-mnist-1000-cpu.yaml` from its own teacher (Lite0
@96 px on the 1,000 labels), {length}, one ingredient changed per row; seeds
{', '.join(map(str, args.seeds))} (mean ± std where several). Test top-1 (%) on the 10,000
test images; the last column is the change against the full recipe on the same seeds.

| variant | student | pseudo-label accuracy | test top-1 | vs full |
| --- | --- | ---: | ---: | ---: |
{chr(10).join(rows)}"""
    write_section("ablations-cpu", "Ablations of the CPU recipe (100 labels per class)", body,
                  ",".join(map(str, args.seeds)))


def _mean(values: list[float]) -> str:
    return _spread([100 * v for v in values], ".2f")


def _spread(values: list[float], spec: str) -> str:
    if len(values) == 1:
        return format(values[0], spec)
    return f"{format(statistics.mean(values), spec)} ± {statistics.stdev(values):.2f}"


if __name__ == "__main__":
    main()
