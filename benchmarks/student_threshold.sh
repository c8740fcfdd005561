#!/bin/bash
# From scratch or pretrained (issue 29): one teacher on the photo test bed, then one student
# per (pile, family), lengths chosen for about equal minutes on a 2-core CPU. The numbers and
# what they decide: benchmarks/HISTORY.md, "From scratch or pretrained".
#   python benchmarks/own_photos.py --out runs/bench/photos && benchmarks/student_threshold.sh
set -euo pipefail
NS="${NS:-python -m noisystudent}"
P="${PHOTOS:-runs/bench/photos}"
R="${OUT:-runs/bench/threshold}"
SHARED="--data $P/labeled --test-data $P/test --labels-per-class 0 --val-fraction 0.1"
$NS train $SHARED --image-size 64 --epochs 30 --out $R/teacher64 --quiet
LITE="--student.image-size 64"
AIRBENCH="--student.model cifar_airbench_s --student.pretrained none --student.image-size 32
  --student.model-options flip_tta=true --student.batch-size 128
  --student.loss-weighting per-image --student.optimizer sgd --student.lr 0.8
  --student.weight-decay 0.0001 --student.norm-bias-lr-scale 64 --student.warmup-epochs 0.5
  --student.label-smoothing 0.2 --student.randaugment-magnitude 9 --student.padding reflect
  --student.drop-rate 0.2 --student.drop-path-rate 0 --student.ema-decay 0.99
  --student.epochs 4"
run() {  # pile, name, passes, flags
  $NS self-train $SHARED --teacher-run $R/teacher64 --unlabeled $P/unlabeled-$1 \
    --iterations 1 --no-corruptions --student.passes $3 $4 --out $R/$2-$1 --quiet
}
run 2000 lite 6 "$LITE"
run 2000 airbench 30 "$AIRBENCH"
run 20000 lite 0.6 "$LITE"
run 20000 airbench 3 "$AIRBENCH"
