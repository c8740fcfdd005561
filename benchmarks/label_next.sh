#!/bin/bash
# Issue 30: do 100 "to-label" images, labeled, pay more than 100 random ones? Fashion-MNIST,
# 100 labels per class; per seed: a teacher, its to-label.csv filled in with the hidden true
# labels (benchmarks/label_next.py), then one self-train iteration at the same budget with
# each set as --extra-labeled (ARMS="chosen random none" adds the run without them). Then
#   python benchmarks/label_next.py table "$OUT"
# writes BENCHMARKS.md, "The images to label next".
set -euo pipefail
NS="${NS:-python -m noisystudent}"
R="${OUT:-runs/bench/label-next}"
BUDGET="${BUDGET:-20m}"
for S in ${SEEDS:-0 1 2}; do
  if [ ! -f "$R/s$S/labels/random.csv" ]; then  # a seed's teacher and labels, made once
    $NS train --labels-per-class 100 --val-fraction 0.1 --image-size 64 --epochs 30 \
      --seed "$S" --out "$R/s$S/teacher" --quiet
    $NS pseudo-label --teacher "$R/s$S/teacher" --out "$R/s$S/labels" --to-label 100 --quiet
    python benchmarks/label_next.py fill "$R/s$S/labels" "$R/s$S/teacher" --seed "$S"
  fi
  for ARM in ${ARMS:-chosen random}; do  # "none": the same run without the 100 labels
    EXTRA=(--extra-labeled "$R/s$S/labels/$ARM.csv")
    [ "$ARM" = none ] && EXTRA=()
    [ -f "$R/s$S/$ARM/report.json" ] || $NS self-train --budget "$BUDGET" --iterations 1 \
      --seed "$S" "${EXTRA[@]}" --out "$R/s$S/$ARM" --quiet
  done
done
