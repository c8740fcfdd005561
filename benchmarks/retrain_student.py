"""One student of a finished self-train run trained again on the same pseudo-labels, with
settings changed: what a lever of the noised student buys, without the teacher and the
labeling before it.

    python benchmarks/retrain_student.py RUN OUT [--iteration 2] [KEY=VALUE ...]

KEY=VALUE pairs override the student's saved settings (YAML values: consistency_weight=1,
model=cifar_airbench, 'model_options={}'). The student learns the labeled split of the
original run; test and validation top-1 are printed and kept in OUT/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from noisystudent.core import runs
from noisystudent.core.config import SelfTrainConfig, StudentConfig
from noisystudent.core.layout import SelfTrainLayout
from noisystudent.data.sources import load_run_data
from noisystudent.data.unlabeled import self_train_unlabeled, stored_size
from noisystudent.stages.stage import share_split
from noisystudent.stages.student import train_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--iteration", type=int, default=2)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    config = SelfTrainConfig(**runs.read_yaml(args.run / runs.CONFIG))
    layout = SelfTrainLayout(args.run, config.teacher_run)
    settings = runs.read_yaml(layout.student(args.iteration) / runs.CONFIG)
    for pair in args.overrides:
        key, value = pair.split("=", 1)
        settings[key] = yaml.safe_load(value)
    student = StudentConfig(**settings)
    data = load_run_data(config, stored_size(config))
    unlabeled, _ = self_train_unlabeled(config, data, layout.teacher)
    share_split(layout.student(args.iteration - 1) if args.iteration > 1 else layout.teacher,
                args.out)
    start = time.perf_counter()
    metrics = train_student(student, args.out, data=data, unlabeled=unlabeled)
    print(json.dumps({key: metrics.get(key) for key in ("test_top1", "val_top1", "passes")}),
          f"in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
