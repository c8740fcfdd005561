"""A forced collapse is caught: a student broken on purpose (every label it learns, true and
pseudo, shuffled across its images) is not kept, at 10, 25 and 100 labels a class.

Each run is a real `self-train` on Fashion-MNIST with the plan's validation split (the guard),
a Lite0 teacher at 64 px and one from-scratch student whose batches carry shuffled labels; the
report must keep the teacher. Writes the "A forced collapse" section of BENCHMARKS.md.

    python benchmarks/forced_collapse.py [--per-class 10 25 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import WORK, write_section  # noqa: E402
from noisystudent.data import loaders  # noqa: E402
from noisystudent.plan import planned_config  # noqa: E402
from noisystudent.stages import selftrain  # noqa: E402


class ShuffledBatches(loaders.ImageBatches):
    """The student's batches, each image's label (or soft target) drawn from another image."""

    @classmethod
    def training(cls, images, labels, *args, **kwargs):
        shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
        return super().training(images, shuffled, *args, **kwargs)


def collapse(per_class: int, seed: int) -> dict:
    out = WORK / "forced-collapse" / f"pc{per_class}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    config, _ = planned_config({
        "labels_per_class": per_class, "seed": seed, "iterations": 1, "corruptions": False,
        "teacher": {"image_size": 64, "epochs": 10},
        "pseudo_label": {"max_images": 5_000},
        "student": {"model": "cifar_airbench_s", "passes": 2}})
    import noisystudent.stages.student as student_stage

    real = student_stage.ImageBatches
    student_stage.ImageBatches = ShuffledBatches  # only the student's batches
    try:
        report = selftrain.self_train(config, out, quiet=True)
    finally:
        student_stage.ImageBatches = real
    teacher, student = report["rows"]
    return {"per_class": per_class, "val": teacher["val_images"],
            "teacher_val": teacher["val_top1"], "student_val": student["val_top1"],
            "teacher_test": teacher["test_top1"], "student_test": student["test_top1"],
            "kept": report["final_role"],
            "sentence": report["comparisons"][0] if report["comparisons"] else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 25, 100])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [collapse(n, args.seed) for n in args.per_class]
    lines = ["| labels a class | validation images | teacher (val / test) | shuffled-label "
             "student (val / test) | kept |", "| ---: | ---: | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['per_class']} | {r['val']} | {100 * r['teacher_val']:.1f}% / "
                     f"{100 * r['teacher_test']:.2f}% | {100 * r['student_val']:.1f}% / "
                     f"{100 * r['student_test']:.2f}% | **{r['kept']}** |")
    body = ("A real `self-train` per label count (Lite0 @64 teacher, 10 epochs; one "
            "`cifar_airbench_s` student of 2 passes over 5,000 pseudo-labeled images, every "
            "label of its batches shuffled across images), on the validation images the plan's "
            "guard holds out. The report must keep the teacher.\n\n" + "\n".join(lines) + "\n")
    write_section("forced-collapse", "A forced collapse is caught", body, seeds=str(args.seed))
    print(body)
    if any(r["kept"] != "teacher" for r in rows):
        sys.exit("a collapsed student was kept")


if __name__ == "__main__":
    main()
