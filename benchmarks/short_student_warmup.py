"""Why a short from-scratch student collapsed (issue 29): train a finished self-train run's
first student again from the same teacher and pseudo-labels, with some of its settings
changed. benchmarks/HISTORY.md, "A short student's warm-up".

    python benchmarks/short_student_warmup.py runs/r29/fm10-seed0 runs/r29/warm/w15 \\
        '{"warmup_epochs": 1.5}'
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from noisystudent.core.config import StudentConfig
from noisystudent.data.sources import load_run_data
from noisystudent.data.unlabeled import unlabeled_split
from noisystudent.stages.stage import share_split
from noisystudent.stages.student import train_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished Fashion-MNIST self-train run")
    parser.add_argument("out", type=Path, help="the new student's run directory")
    parser.add_argument("changes", type=json.loads, help="student settings to change, as JSON")
    args = parser.parse_args()
    values = yaml.safe_load((args.run / "iter1" / "student" / "config.yaml").read_text())
    config = StudentConfig(**{**values, **args.changes})
    data = load_run_data(config, config.image_size)
    teacher = args.run / "iter0-teacher"
    unlabeled, _ = unlabeled_split(data.train, teacher, config.data)
    share_split(teacher, args.out)
    metrics = train_student(config, args.out, data=data, unlabeled=unlabeled, quiet=True)
    print(json.dumps({"changes": args.changes, "steps": metrics["steps"],
                      "val_top1": metrics["val_top1"], "test_top1": metrics["test_top1"]}))


if __name__ == "__main__":
    main()
