"""The CPU at hand, measured: which precision, memory format, compilation and thread count
train and label fastest. Each CPU kind (AMX, AVX-512 BF16, AVX2 only) gets its own section of
BENCHMARKS.md, so a run on another machine adds its kind beside the others.

    python benchmarks/cpu_kinds.py [--batch-size 256] [--steps 4] [--skip-compile]

The bare tf_efficientnet_lite0 @32 step (forward, backward, fused AdamW) on random inputs,
and inference (eval, no grad) at the same batch; then each model family's training step in
fp32 and bf16 beside the dtype ``precision: auto`` picks for it (``precision.py``, measured
at start-up with a fresh cache). Every figure is images/s in this one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from noisystudent.core.config import TrainConfig  # noqa: E402
from noisystudent.core.device import autocast, cpu_kind  # noqa: E402
from noisystudent.models.build import create_model  # noqa: E402
from noisystudent.models.precision import training_precision  # noqa: E402
from noisystudent.models.speed import training_rate  # noqa: E402
from noisystudent.training.optim import make_optimizer  # noqa: E402

MODEL, SIZE = "tf_efficientnet_lite0", 32
# Warm-up steps before timing. Measured here: the 3rd and 4th steps of a process's first
# model took 5.3 s and 2.3 s against 0.33 s for the others (the VM backing fresh memory).
WARMUP = 5


def train_rate(batch: int, steps: int, dtype, channels_last: bool, compiled: bool,
               threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(MODEL, 10, drop_path_rate=0.2).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = make_optimizer("adamw", [{"params": list(model.parameters())}], 1e-3, 0.0)
    step_model = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, SIZE, SIZE).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with autocast(torch.device("cpu"), dtype):
            loss = F.cross_entropy(step_model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP):  # warm up (and compile)
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


# (model, image size, input channels, batch divisor): the teachers and students the recipes
# use; the slow ones measured at a quarter of the batch (a bf16 step without bf16 hardware
# takes seconds).
FAMILIES = [("tf_efficientnet_lite0", 32, 3, 1), ("tf_efficientnet_lite0", 96, 3, 4),
            ("cifar_resnet20", 28, 1, 1), ("cifar_resnet32", 28, 1, 1),
            ("cifar_resnet56", 28, 1, 1), ("cifar_wrn28_2", 28, 1, 1),
            ("cifar_airbench_s", 28, 1, 1), ("cifar_airbench", 28, 1, 1),
            ("cifar_airbench_l", 28, 1, 4)]


def family_rows(batch: int, steps: int) -> list[str]:
    """Per family: the bare step in fp32 and bf16 (channels_last, drop-path 0.1) and what
    ``precision: auto`` chooses, measured as a fresh run would (empty cache)."""
    rows = ["| model | input | fp32 images/s | bf16 images/s | auto picks | auto vs fp32 | "
            "auto vs bf16 |", "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
    for name, size, chans, divisor in FAMILIES:
        shape = (batch // divisor, chans, size, size)
        rates = [training_rate(create_model(name, 10, drop_path_rate=0.1, in_chans=chans),
                               shape, dtype, steps=steps) for dtype in (None, torch.bfloat16)]
        with tempfile.TemporaryDirectory() as cache:
            os.environ["NOISYSTUDENT_CACHE"] = cache
            config = TrainConfig(model=name, pretrained="none", image_size=size,
                                 in_chans=chans, batch_size=shape[0], drop_path_rate=0.1)
            auto = training_precision(config, torch.device("cpu"))
            del os.environ["NOISYSTUDENT_CACHE"]
        picked = rates[1] if auto == torch.bfloat16 else rates[0]
        rows.append(f"| {name} | {size} px x {chans}, batch {shape[0]} | {rates[0]:,.0f} | "
                    f"{rates[1]:,.0f} | {'bf16' if auto else 'fp32'} | "
                    f"{picked / rates[0]:.2f}x | {picked / rates[1]:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def noise_rate(batch: int, steps: int, threads: int) -> tuple[float, float]:
    """Images/s of the student's noise (pad-crop, flip, RandAugment 2 ops, magnitude 9) on
    Fashion-MNIST: torchvision's v2.RandAugment called once per image (the previous
    implementation) against the batched per-image noise of the noise package."""
    from torchvision.transforms import v2

    from noisystudent.data.fashion_mnist import load_fashion_mnist
    from noisystudent.noise import BatchedNoise
    from noisystudent.noise.crop import crop_flip

    torch.set_num_threads(threads)
    images = load_fashion_mnist("test").images[:batch]
    per_image = v2.RandAugment(num_ops=2, magnitude=9)
    rates = []
    for noise in (lambda x: torch.stack([per_image(i) for i in crop_flip(x)]),
                  BatchedNoise(num_ops=2, magnitude=9)):
        noise(images)
        start = time.perf_counter()
        for _ in range(steps * 4):
            noise(images)
        rates.append(batch * steps * 4 / (time.perf_counter() - start))
    return rates[0], rates[1]


@torch.no_grad()
def inference_rate(batch: int, steps: int, dtype, threads: int) -> float:
    torch.set_num_threads(threads)
    model = create_model(MODEL, 10).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, SIZE, SIZE).to(memory_format=torch.channels_last)
    with autocast(torch.device("cpu"), dtype):
        model(x)
        start = time.perf_counter()
        for _ in range(steps * 4):
            model(x)
    return batch * steps * 4 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    cores, bf16 = torch.get_num_threads(), torch.bfloat16
    kind = cpu_kind()
    variants = [
        ("fp32, contiguous", dict(dtype=None, channels_last=False, compiled=False)),
        ("fp32, channels_last", dict(dtype=None, channels_last=True, compiled=False)),
        ("bf16 autocast, channels_last", dict(dtype=bf16, channels_last=True, compiled=False)),
    ]
    if not args.skip_compile:
        variants += [
            ("fp32, channels_last, torch.compile",
             dict(dtype=None, channels_last=True, compiled=True)),
            ("bf16 autocast, channels_last, torch.compile",
             dict(dtype=bf16, channels_last=True, compiled=True)),
        ]
    rows = []
    train_rate(args.batch_size, 1, threads=cores, **variants[0][1])  # the process's first touch
    for name, settings in variants:
        rate = train_rate(args.batch_size, args.steps, threads=cores, **settings)
        rows.append(("training", name, cores, rate))
        print(f"training {name}: {rate:.0f} images/s", flush=True)
    one = train_rate(args.batch_size, args.steps, None, True, False, threads=1)
    rows.append(("training", "fp32, channels_last", 1, one))
    for name, dtype in (("fp32", None), ("bf16 autocast", bf16)):
        rate = inference_rate(args.batch_size, args.steps, dtype, cores)
        rows.append(("inference", f"{name}, channels_last", cores, rate))
        print(f"inference {name}: {rate:.0f} images/s", flush=True)

    families = family_rows(args.batch_size, args.steps)
    looped, batched = noise_rate(args.batch_size, args.steps, cores)
    print(f"noise: {looped:.0f} images/s per image, {batched:.0f} batched", flush=True)

    base = rows[1][3]  # training, fp32, channels_last, all cores
    table = ["| work | variant | threads | images/s | vs fp32 channels_last |",
             "| --- | --- | --- | --- | --- |"]
    for work, name, threads, rate in rows:
        reference = base if work == "training" else rows[-2][3]
        table.append(f"| {work} | {name} | {threads} | {rate:,.0f} | {rate / reference:.2f}x |")
    body = (f"CPU kind: **{kind}** (from the CPU's flags: AMX, AVX-512 BF16, or neither). "
            f"tf_efficientnet_lite0 @{SIZE}, batch {args.batch_size}, {args.steps} timed steps "
            f"after {WARMUP} warm-up steps (compilation included in the warm-up).\n\n"
            + "\n".join(table) + "\n\n"
            "Each model family's training step (forward, cross-entropy, backward, SGD; "
            "`speed.training_rate`) and the dtype `precision: auto` picks for it, measured "
            "at start-up as a first run does (its own short measurement, so the pick can differ "
            "from this table where the two dtypes are close):\n\n"
            + "\n".join(families) + "\n\n"
            f"The student's noise (pad-crop, flip, RandAugment 2 ops at magnitude 9, "
            f"Fashion-MNIST 28 px): {looped:,.0f} images/s with torchvision's RandAugment "
            f"called per image, {batched:,.0f} batched (noise/), {batched / looped:.1f}x.\n")
    write_section(f"cpu-{kind.replace(' ', '-').lower()}",
                  f"CPU kind: {kind} (training and inference step)", body, "0")


if __name__ == "__main__":
    main()
