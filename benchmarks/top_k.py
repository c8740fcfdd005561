"""Top-k soft labels against full ones: one iteration of the demo's recipe from the same
teacher, with ``pseudo_label.top_k`` 3 against every class (10), per seed.

    python benchmarks/top_k.py [--seeds 0 1] [--teachers RUN0 RUN1] [--top-k 3 9]

Teachers given with --teachers serve the first seeds; the other seeds' are trained.

The teacher of each seed is the demo's (configs/demo.yaml, Lite0 at 32 px on the 1,000
labels): trained once into runs/bench/demo-teacher-seed{S}/, or given with --teachers. The
students of a seed start from the same teacher and the same split, and differ only in the
stored soft labels. A top_k of 9 drops only each image's least likely class: it measures how
far a student moves when its labels change by almost nothing (the run-to-run spread that a
top-3 difference must be read against). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, ROOT, WORK, config_teacher, run, write_section  # noqa: E402

from noisystudent.core.layout import SelfTrainLayout  # noqa: E402

DEMO = ROOT / "configs" / "demo.yaml"


def demo_teacher(seed: int) -> Path:
    return config_teacher(DEMO, WORK / f"demo-teacher-seed{seed}", seed)


def student(teacher: Path, seed: int, top_k: int) -> dict:
    out = WORK / f"top-k-{top_k}-seed{seed}"
    if not (out / "report.json").is_file():
        resume = ["--resume"] if (out / "config.yaml").is_file() else []
        run(CLI + ["self-train", str(DEMO), "--out", str(out), "--quiet", "--iterations", "1",
                   "--seed", str(seed), "--teacher-run", str(teacher), "--no-corruptions",
                   "--pseudo-label.top-k", str(top_k), *resume])
    row = json.loads((out / "report.json").read_text())["rows"][1]
    labels = json.loads((SelfTrainLayout(out).pseudo_labels(1) / "summary.json").read_text())
    return {**row, "stored_bytes": labels["stored_bytes"] / labels["unlabeled_images"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--teachers", nargs="+", help="finished teacher runs, one per seed")
    parser.add_argument("--top-k", type=int, nargs="+", default=[3, 9])
    args = parser.parse_args()
    # Teachers given for the first seeds; the others' are trained.
    given = [Path(t) for t in args.teachers or []]
    teachers = given + [demo_teacher(s) for s in args.seeds[len(given):]]
    rows, gaps = [], {k: [] for k in args.top_k}
    for seed, teacher in zip(args.seeds, teachers):
        full = student(teacher, seed, 0)
        cells = [f"{100 * full['test_top1']:.2f}"]
        for k in args.top_k:
            top = student(teacher, seed, k)
            gap = 100 * (top["test_top1"] - full["test_top1"])
            gaps[k].append(gap)
            cells.append(f"{100 * top['test_top1']:.2f} ({gap:+.2f}, {top['stored_bytes']:.0f} B)")
        shown = teacher.relative_to(ROOT) if teacher.is_relative_to(ROOT) else teacher
        rows.append(f"| {seed} | `{shown}` | {' | '.join(cells)} |")
    means = " | ".join(f"{statistics.mean(g):+.2f} ± {statistics.stdev(g):.2f}"
                       if len(g) > 1 else f"{g[0]:+.2f}" for g in gaps.values())
    rows.append(f"| mean difference ± sd | | | {means} |")
    heads = " | ".join(f"top_k {k} (difference, bytes)" for k in args.top_k)
    body = f"""Student 1 of `configs/demo.yaml` (Lite0 @32, 400 steps) from the demo's teacher,
learning from every class's probability (10 classes, fp16, {full['stored_bytes']:.0f} bytes an
image stored) or from the top k renormalised; test top-1 (%) on the 10,000 test images.
Goal: top 3 within 0.3 points of full labels per seed.

| seed | teacher | full | {heads} |
| --- | --- | ---: | {' | '.join('---:' for _ in args.top_k)} |
{chr(10).join(rows)}"""
    write_section("top-k", "Top-k soft labels against full ones", body,
                  ",".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
