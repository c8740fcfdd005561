"""Label efficiency on Fashion-MNIST: the supervised teacher and Noisy Student iterations 1-3
at 100 labels per class (3 seeds: mean +- std) and 10 labels per class, and the final
architecture trained on all 60,000 labels as the upper bound. Also the robustness table
(error per corruption and mCE, teacher vs final student, seed 0) and each pipeline's wall time.

    python benchmarks/label_efficiency.py [--seeds 0 1 2] [--skip-upper-bound]

Runs go to runs/bench/ (NOISYSTUDENT_BENCH_DIR); a finished run is not recomputed, so the
script can be stopped and started again. The recipe is configs/archive/fashion-mnist-1000.yaml.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, ROOT, WORK, run, write_section  # noqa: E402

RECIPE = ROOT / "configs" / "archive" / "fashion-mnist-1000.yaml"
UPPER_MODEL = "tf_efficientnet_lite2"  # the recipe's last student


def self_train(name: str, *flags: str) -> dict:
    """A finished self-training run's report (running or resuming it first), plus wall time."""
    out = WORK / name
    timing = out.with_suffix(".wall.json")
    report = out / "report.json"
    if not report.is_file():
        resume = ["--resume"] if (out / "config.yaml").is_file() else []
        measured = run(CLI + ["self-train", str(RECIPE), "--out", str(out), "--quiet",
                              *flags, *resume])
        if not resume:  # a resumed run's wall time would be partial
            timing.write_text(json.dumps(measured))
    result = json.loads(report.read_text())
    result["wall_seconds"] = json.loads(timing.read_text())["seconds"] \
        if timing.is_file() else None
    return result


def upper_bound() -> dict:
    out = WORK / "all-labels-lite2"
    if not (out / "metrics.json").is_file():
        resume = ["--resume"] if (out / "config.yaml").is_file() else []
        run(CLI + ["train", "--model", UPPER_MODEL, "--pretrained", "offline",
                   "--image-size", "32", "--labels-per-class", "6000", "--val-per-class", "0",
                   "--epochs", "3", "--quiet", "--out", str(out), *resume])
    return json.loads((out / "metrics.json").read_text())


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return pct(values[0])
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip-upper-bound", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)

    # Seed 0 carries the corruption evaluation (the robustness table); other seeds skip it.
    hundred = {s: self_train(f"le-100-seed{s}", "--seed", str(s),
                             *([] if s == 0 else ["--no-corruptions"])) for s in args.seeds}
    # 10 labels per class: the teacher keeps the recipe's 450 steps (15 per epoch).
    ten = self_train("le-10-seed0", "--labels-per-class", "10", "--no-corruptions",
                     "--set", "teacher.steps_per_epoch=15")
    upper = None if args.skip_upper_bound else upper_bound()

    def row(label: str, reports: list[dict]) -> str:
        cells = [mean_std([r["rows"][i]["test_top1"] for r in reports]) for i in range(4)]
        walls = [r["wall_seconds"] for r in reports if r["wall_seconds"]]
        wall = f"{statistics.mean(walls) / 60:.1f} min" if walls else "-"
        return f"| {label} | " + " | ".join(cells) + f" | {wall} |"

    links = [WORK / f"le-100-seed{s}" for s in args.seeds]
    reused = [f"`{link.relative_to(ROOT)}` -> `{link.resolve().relative_to(ROOT)}`"
              for link in links if link.is_symlink()]
    lines = [row(f"100 per class, seeds {', '.join(map(str, args.seeds))} (mean ± std)",
                 list(hundred.values()))]
    lines += [row(f"100 per class, seed {s}", [r]) for s, r in hundred.items()]
    lines.append(row("10 per class, seed 0", [ten]))
    if upper:
        lines.append(f"| all 60,000 labels, {UPPER_MODEL} supervised (upper bound) | "
                     f"{pct(upper['test_top1'])} | - | - | - | - |")
    best = max(statistics.mean(r["rows"][i]["test_top1"] for r in hundred.values())
               for i in range(4))
    walls = [r["wall_seconds"] for r in hundred.values() if r["wall_seconds"]]
    pipeline = f"{statistics.mean(walls) / 60:.1f} minutes" if walls else "not timed"
    met = best >= 0.90 and walls and statistics.mean(walls) <= 30 * 60
    verdict = "met" if met else "**not met**"
    models = " -> ".join(r["model"] for r in hundred[args.seeds[0]]["rows"])

    seed0 = hundred[args.seeds[0]]["rows"]
    teacher, final = seed0[0], seed0[-1]
    robust = []
    if teacher.get("corruption_errors") and final.get("corruption_errors"):
        robust = ["| corruption | teacher error | final student error |", "| --- | ---: | ---: |"]
        for name, errors in teacher["corruption_errors"].items():
            mine = final["corruption_errors"][name]
            robust.append(f"| {name} | {pct(sum(errors) / len(errors))} | "
                          f"{pct(sum(mine) / len(mine))} |")
        robust.append(f"| **mean corruption error** | {pct(teacher['mean_corruption_error'])}"
                      f" | {pct(final['mean_corruption_error'])} |")
        robust.append(f"| **mCE** (teacher = 100) | 100.0 | {final['mce']:.1f} |")

    teacher = models.split(' -> ')[0]
    body = f"""Recipe `configs/archive/fashion-mnist-1000.yaml`: teacher {teacher} @32 with
ImageNet weights, 450 steps of 64; students {' -> '.join(models.split(' -> ')[1:])}, 600 steps
of 64 labeled + 192 pseudo-labeled images, RandAugment(2, 9), dropout 0.3, stochastic depth
0.2; soft pseudo-labels, threshold 0.3, balanced. Test top-1 (%) on the 10,000 test images.

| labels | teacher | NS iteration 1 | iteration 2 | iteration 3 | pipeline wall time |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(lines)}

{"Reused finished runs of the same recipe (linked, so not timed here): " + ", ".join(reused)
 + "." if reused else ""}

Pipeline target (100 labels per class to >= 90% in <= 30 minutes): best mean accuracy
{100 * best:.2f}% in {pipeline} per run (without the corruption evaluation): {verdict}.

### Robustness (seed 0, first 2,000 test images x 15 corruptions x 5 severities)

Error (%) averaged over the 5 severities; mCE relative to the teacher.

{chr(10).join(robust) if robust else "(no corruption evaluation in these runs)"}

![test top-1 per iteration](results/accuracy.png)
![error per corruption, teacher vs final student](results/corruptions.png)"""
    for plot in ("accuracy.png", "corruptions.png"):  # runs/ is not committed; the plots are
        source = WORK / f"le-100-seed{args.seeds[0]}" / plot
        if source.is_file():
            (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
            shutil.copyfile(source, ROOT / "benchmarks" / "results" / plot)
    # The section is history (the first recipe's): it lives in benchmarks/HISTORY.md, so the
    # plots' links above are relative to benchmarks/.
    write_section("label-efficiency", "Label efficiency and robustness", body,
                  ", ".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
