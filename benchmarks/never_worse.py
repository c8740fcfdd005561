"""Never below the teacher, on a slow machine: `self-train --budget B` over seeds on the odd
folder (`odd_folder.py`), the 2,000-photo pile (`own_photos.py`) and Fashion-MNIST, each run
pinned to one core (`taskset -c CORE`: a 2-core machine made a 1-core one), and the table of
every finished run written into BENCHMARKS.md ("Never below the teacher on one core").

    python benchmarks/own_photos.py --out runs/bench/photos --unlabeled 2000
    python benchmarks/odd_folder.py --out runs/bench/odd
    python benchmarks/never_worse.py run --core 0 --cases fm3 fm8 --seeds 0 1 2 3 4
    python benchmarks/never_worse.py table      # the section, from every finished run

Two queues may run at once, one per core: each run then shares the machine's memory with one
other run, as on a busy laptop. Every run's command is in the table.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, WORK, write_section  # noqa: E402

from noisystudent.core.keep import kept_step, untrusted_steps  # noqa: E402

OUT = ROOT / "runs" / "r50"
PHOTOS, ODD = WORK / "photos", WORK / "odd"
ODD_FLAGS = ["--data", f"{ODD}/train", "--test-data", f"{ODD}/test", "--unlabeled",
             f"{ODD}/unlabeled"]
PHOTO_FLAGS = ["--data", f"{PHOTOS}/labeled", "--test-data", f"{PHOTOS}/test", "--unlabeled",
               f"{PHOTOS}/unlabeled-2000"]
ODD_NAME = "odd folder (400 labeled files, 42 broken; 2,001 unlabeled; 48 px)"
PHOTO_NAME = "photos (200 labels, 2,000 unlabeled JPEGs)"
CASES = {  # name: (what, budget, the data's flags)
    "fm3": ("Fashion-MNIST, 100 labels a class", "3m", []),
    "fm8": ("Fashion-MNIST, 100 labels a class", "8m", []),
    "odd5": (ODD_NAME, "5m", ODD_FLAGS),
    "odd10": (ODD_NAME, "10m", ODD_FLAGS),
    "photos4": (PHOTO_NAME, "4m", PHOTO_FLAGS),
    "photos10": (PHOTO_NAME, "10m", PHOTO_FLAGS),
}


def command(case: str, seed: int, core: int) -> list[str]:
    _, budget, data = CASES[case]
    out = OUT / f"{case}-seed{seed}"
    return ["taskset", "-c", str(core), "noisystudent", "self-train", *data, "--budget", budget,
            "--seed", str(seed), "--out", str(out.relative_to(ROOT))]


def run(core: int, cases: list[str], seeds: list[int]) -> None:
    for seed in seeds:
        for case in cases:
            out = OUT / f"{case}-seed{seed}"
            if (out / "report.json").is_file():
                continue
            OUT.mkdir(parents=True, exist_ok=True)
            with open(OUT / f"{case}-seed{seed}.log", "w") as log:
                subprocess.run(command(case, seed, core), cwd=ROOT, stdout=log, stderr=log,
                               check=False)


def student_minutes(run: Path) -> str:
    """Student 1's minutes: the first plan's (plan.yaml's first line), the re-plan's before it
    started (the run's log) and what it took (timings.json), e.g. "3.3 / 3.2 / 3.3"."""
    first = re.search(r"iter1/student ([0-9.]+)", (run / "plan.yaml").read_text())
    log = run.with_name(run.name + ".log")
    again = re.search(r"student 1 gets [0-9.]+ passes, ([0-9.]+) min of training at [0-9]+ "
                      r"images/s \(and ([0-9.]+) of evaluation\)",
                      log.read_text() if log.is_file() else "")
    took = json.loads((run / "timings.json").read_text()).get("iter1/student")
    if not (first and again and took):
        return "-"
    return (f"{float(first[1]):.1f} / {float(again[1]) + float(again[2]):.1f} / "
            f"{took / 60:.1f}")


def code_of(run: Path) -> str:
    """The commit the run ran: the one main pointed at when its teacher started (the reflog
    says when main moved; a commit merged later keeps its earlier time), else the last commit
    made before."""
    started = (run / "iter0-teacher" / "config.yaml").stat().st_mtime
    moves = _git("reflog", "--date=unix", "--format=%h %gd", "main")
    commits = [(int(when.split("{")[1].rstrip("}")), commit) for commit, when in moves] or \
        [(int(when), commit) for commit, when in _git("log", "--format=%h %ct")]
    return next((commit for when, commit in commits if when <= started), "?")


def _git(*args: str) -> list[tuple[str, str]]:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                         check=False).stdout.split()
    return [(out[i], out[i + 1]) for i in range(0, len(out) - 1, 2)]


def kept_today(run: Path, rows: list[dict]) -> dict:
    """The step today's keep rule keeps among a finished run's rows."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    kept, _, _ = kept_step(rows, untrusted_steps(run, config.get("iterations", 0)))
    return rows[kept]


def table() -> None:
    lines = ["| run | seed | teacher (test) | students (test) | kept (test) | kept minus "
             "teacher | validation images | used of budget | student 1 min: plan / re-plan / "
             "ran | code | kept by today's rule |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
    worst = today_worst = None
    for case, (what, budget, _) in CASES.items():
        for report_path in sorted(OUT.glob(f"{case}-seed*/report.json")):
            report = json.loads(report_path.read_text())
            rows, time = report["rows"], report.get("time", {})
            teacher, kept = rows[0]["test_top1"], report["final_test_top1"]
            students = ", ".join(f"{100 * r['test_top1']:.2f}%" for r in rows[1:]) or "none"
            seed = report_path.parent.name.rsplit("seed", 1)[1]
            gap = 100 * (kept - teacher)
            worst = gap if worst is None else min(worst, gap)
            used = time.get("used_minutes", 0)
            today = kept_today(report_path.parent, rows)
            today_gap = 100 * (today["test_top1"] - teacher)
            today_worst = today_gap if today_worst is None else min(today_worst, today_gap)
            lines.append(f"| {what}, `--budget {budget}` | {seed} | {100 * teacher:.2f}% | "
                         f"{students} | {100 * kept:.2f}% ({report['final_role']}) | "
                         f"{gap:+.2f} | {rows[0].get('val_images') or 0} | {used:.1f} of "
                         f"{budget[:-1]} min ({used / float(budget[:-1]):.0%}) | "
                         f"{student_minutes(report_path.parent)} | "
                         f"{code_of(report_path.parent)} | {today['role']} "
                         f"({today_gap:+.2f}) |")
    body = (f"Each run `taskset -c CORE noisystudent self-train DATA --budget B --seed S "
            f"--out runs/r50/CASE-seedS` (the data flags in `benchmarks/never_worse.py`), on "
            f"one core of the machine above; two runs at a time, one per core. The lowest kept "
            f"model against its teacher on test: **{worst:+.2f}** points as the runs kept it, "
            f"**{today_worst:+.2f}** by today's keep rule on the same validation counts (the "
            f"last column: `core/keep.py` applied to each run's report). \"student 1 min\": "
            f"the first plan's minutes for student 1, the re-plan's before it started, and what "
            f"it took; \"code\": the commit on main when the run started.\n\n"
            + "\n".join(lines) + "\n")
    write_section("never-worse", "Never below the teacher on one core", body,
                  seeds="0-4 where listed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    queue = sub.add_parser("run")
    queue.add_argument("--core", type=int, required=True)
    queue.add_argument("--cases", nargs="+", choices=list(CASES), required=True)
    queue.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    sub.add_parser("table")
    args = parser.parse_args()
    if args.what == "run":
        run(args.core, args.cases, args.seeds)
    else:
        table()


if __name__ == "__main__":
    main()
