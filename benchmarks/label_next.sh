#!/bin/bash
# Issue 30: do 100 "to-label" images, labeled, pay more than 100 random ones? Fashion-MNIST,
# 100 labels per class; per seed: a teacher, its to-label.csv filled in with the hidden true
# labels (benchmarks/label_next.py), then one self-train iteration at the same budget with
# each set as --extra-labeled. The numbers: BENCHMARKS.md, "The images to label next".
set -euo pipefail
NS="${NS:-python -m noisystudent}"
R="${OUT:-runs/bench/label-next}"
BUDGET="${BUDGET:-20m}"
for S in ${SEEDS:-0 1 2}; do
  $NS train --labels-per-class 100 --val-fraction 0.1 --image-size 64 --epochs 30 --seed "$S" \
    --out "$R/s$S/teacher" --quiet
  $NS pseudo-label --teacher "$R/s$S/teacher" --out "$R/s$S/labels" --to-label 100 --quiet
  python benchmarks/label_next.py "$R/s$S/labels" "$R/s$S/teacher" --seed "$S"
  for ARM in chosen random; do
    $NS self-train --budget "$BUDGET" --iterations 1 --seed "$S" \
      --extra-labeled "$R/s$S/labels/$ARM.csv" --out "$R/s$S/$ARM" --quiet
  done
done
