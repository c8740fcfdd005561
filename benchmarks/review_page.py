"""report.html's size and build time: self-train runs, and 1 M streamed images at 10 and at
1,000 classes.

    python benchmarks/review_page.py --self-train runs/demo-* runs/budget-30m

``noisystudent review`` on each, run alone, its wall time and peak memory measured. The 1 M
images and the teachers are the streamed pseudo-labeling benchmark's
(``pseudo_label_streaming.py``: Fashion-MNIST's training images repeated, shifted and
mirrored, in a uint8 .npy; a fast 10-class teacher and the same with a random 1,000-class
head), labeled with threshold 0, so every image is selected: the most a page has to go through.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, WORK, run, write_section  # noqa: E402
from pseudo_label_streaming import perturbed_npy, teacher, thousand_class_teacher  # noqa: E402

IMAGES = 1_000_000


def labels(teacher_dir: Path, unlabeled: Path, name: str) -> Path:
    out = WORK / name
    if not (out / "summary.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        run(CLI + ["pseudo-label", "--teacher", str(teacher_dir), "--unlabeled", str(unlabeled),
                   "--out", str(out), "--threshold", "0", "--batch-size", "1024", "--quiet"])
    return out


def page(directory: Path) -> dict:
    measured = run(CLI + ["review", str(directory)])
    path = directory / "report.html"
    return {**measured, "bytes": path.stat().st_size,
            "images": path.read_text(encoding="utf-8").count("<img ")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-train", required=True, nargs="+", type=Path, metavar="RUN_DIR",
                        help="finished self-train runs (make demo's, or any), a row each")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    base = teacher()
    pile = perturbed_npy(IMAGES)
    pages = {f"self-train `{run_dir.name}`": page(run_dir) for run_dir in args.self_train}
    pages["1 M images, 10 classes"] = page(labels(base, pile, "review-1m-10"))
    wide = thousand_class_teacher(base)
    pages["1 M images, 1,000 classes"] = page(labels(wide, pile, "review-1m-1000"))
    rows = [f"| {name} | {r['bytes'] / 1e6:.2f} MB | {r['images']:,} | {r['seconds']:.1f} s | "
            f"{r['max_rss_mb']:,.0f} MB |" for name, r in pages.items()]
    body = """`noisystudent review DIR`, run alone; wall time includes Python's start-up and
loading the images again. The 1 M-image labelings are the streamed benchmark's images and teachers,
threshold 0 (every image selected).

| page | size | pictures | build time | peak RSS |
| --- | ---: | ---: | ---: | ---: |
""" + "\n".join(rows) + "\n"
    print(json.dumps(pages, indent=1))
    write_section("review-page", "report.html: size and build time", body, "seed 0")


if __name__ == "__main__":
    main()
