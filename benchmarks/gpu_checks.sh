#!/usr/bin/env bash
# Every GPU check of the speed issue in one prepared run of at most 8 minutes, for the device
# machine (one GPU, no network). Build the bundle first (`.device/`: the data and the
# Lite0 weights, with a setup.sh that installs the project from them), then:
#
#   run  carry: [".device"]  command: . .device/setup.sh && bash benchmarks/gpu_checks.sh
#
# Logs, and BENCHMARKS.md and benchmarks/HISTORY.md as the steps left them, go to $OUT (or
# ./gpu-checks); each step has its own time limit, and a failed step is logged and does not
# stop the others.
set -uo pipefail
out=${OUT:-gpu-checks}
mkdir -p "$out"
py=${PYTHON:-python3}
ns() { "$py" -m noisystudent "$@"; }
nccl() { "$py" -m torch.distributed.run --standalone --nproc_per_node=1 -m noisystudent "$@"; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}
tiny=(--model resnet10t --pretrained none --labels-per-class 4 --epochs 1 --batch-size 8
      --image-size 32 --device cuda --quiet)
work=$(mktemp -d)

"$py" -c "import torch, timm, torchvision; print(torch.__version__, timm.__version__,
  torchvision.__version__, torch.cuda.get_device_name(0))" | tee "$out/summary.txt"
# 1. torchrun with one process under NCCL: the same collectives as many processes.
step nccl-train 60 nccl train --out "$work/teacher" "${tiny[@]}"
step nccl-distill 60 nccl distill --teacher "$work/teacher" --out "$work/distill" "${tiny[@]}"
step nccl-pseudo-label 60 nccl pseudo-label --teacher "$work/teacher" --out "$work/labels" \
  --max-images 2000 --threshold 0 --device cuda --quiet
step nccl-self-train 90 nccl self-train configs/smoke.yaml --out "$work/smoke" --device cuda --quiet
# 2. The student step against the bare step, host syncs, compile on and off.
step gpu-step 120 "$py" benchmarks/gpu_step.py --steps 20
step speed 60 "$py" benchmarks/speed.py --device cuda
# 3. The CPU recipe end to end on the GPU (96 px teacher, ResNet-20 -> ResNet-32 students),
#    corruptions included: what it costs there, and whether bf16 on CUDA keeps its accuracy.
step recipe 240 ns self-train configs/fashion-mnist-1000-cpu.yaml --out "$work/recipe" --device cuda
cp "$work/recipe/report.md" "$out/recipe-report.md" 2>/dev/null
cp BENCHMARKS.md benchmarks/HISTORY.md "$out/"
