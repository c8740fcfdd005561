"""The student step on a GPU: host syncs counted, the toolkit against the bare step, batch
sizes, torch.compile on and off. Needs CUDA; a run takes a few minutes.

    python benchmarks/gpu_step.py [--steps 40]

- Host syncs: PyTorch's sync debug mode counts every point where the host waits for the GPU
  during ``train_one_epoch``; the count must not grow with the number of steps.
- Throughput (images/s, one run): the bare Lite0 @32 step (forward, backward, fused AdamW,
  bf16, channels_last) against the toolkit's Noisy Student step (device-resident uint8 sets,
  batched per-image noise, the same model), at 256, 1,024 and 4,096 images per step, with and
  without torch.compile.
- Noise on the GPU equals noise on the CPU for the same drawn ops.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from noisystudent.core.config import StudentConfig  # noqa: E402
from noisystudent.core.device import autocast  # noqa: E402
from noisystudent.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from noisystudent.data.loaders import ImageBatches, LabeledAndPseudoBatches  # noqa: E402
from noisystudent.noise import make_augment  # noqa: E402
from noisystudent.noise.randaugment import BatchedRandAugment  # noqa: E402
from noisystudent.stages.stage import build_model  # noqa: E402
from noisystudent.training.engine import train_one_epoch  # noqa: E402
from noisystudent.training.optim import build_optimizer, make_optimizer  # noqa: E402
from noisystudent.training.tasks import NoisyStudentTask  # noqa: E402

CUDA = torch.device("cuda")


def student(batch: int, compiled: bool):
    config = StudentConfig(pseudo_labels="x", model="tf_efficientnet_lite0", pretrained="none",
                           batch_size=batch // 4, unlabeled_ratio=3, augment="randaugment",
                           epochs=1, compile=compiled)
    model, spec = build_model(config, 10, CUDA)
    task = NoisyStudentTask(model, make_augment(config), spec, device=CUDA)
    if compiled:
        task.compile()
    return config, task


def toolkit_rate(images, probs, batch: int, steps: int, compiled: bool) -> float:
    config, task = student(batch, compiled)
    optimizer, scheduler = build_optimizer(task.trained_module(), config, 2 * steps)
    labels = probs.argmax(1)

    def loader(n: int) -> LabeledAndPseudoBatches:
        return LabeledAndPseudoBatches(
            ImageBatches.training(images[:1000], labels[:1000], batch // 4, CUDA, seed=0,
                                  steps=n),
            ImageBatches.training(images, probs, batch // 4 * 3, CUDA, seed=1, steps=n))

    run = dict(device=CUDA, dtype=torch.bfloat16, progress=False)
    train_one_epoch(task, loader(steps), optimizer, scheduler, **run)  # warm up, compile
    return train_one_epoch(task, loader(steps), optimizer, scheduler, **run)["images_per_s"]


def bare_rate(batch: int, steps: int, compiled: bool) -> float:
    config, task = student(batch, compiled)
    model = task.trainable_module
    optimizer = make_optimizer("adamw", [{"params": list(task.trained_module().parameters())}],
                               1e-3, 0.0)
    x = torch.randn(batch, 3, 32, 32, device=CUDA).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=CUDA)

    def step() -> None:
        with autocast(CUDA, torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def host_syncs(images, probs, steps: int) -> int:
    config, task = student(256, False)
    optimizer, scheduler = build_optimizer(task.trained_module(), config, steps)
    loader = LabeledAndPseudoBatches(
        ImageBatches.training(images[:1000], probs[:1000].argmax(1), 64, CUDA, seed=0,
                              steps=steps),
        ImageBatches.training(images, probs, 192, CUDA, seed=1, steps=steps))
    train_one_epoch(task, loader, optimizer, scheduler, device=CUDA, dtype=torch.bfloat16,
                    progress=False)  # first call: one-off tables and allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_one_epoch(task, loader, optimizer, scheduler, device=CUDA, dtype=torch.bfloat16,
                        progress=False)
    torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def noise_matches_cpu(images) -> bool:
    augment = BatchedRandAugment(num_ops=1, magnitude=9)
    ops = torch.arange(len(images)) % 14
    negative = torch.arange(len(images)) % 2 == 0
    cpu = augment.apply_op(images, ops, negative)
    gpu = augment.apply_op(images.to(CUDA), ops.to(CUDA), negative.to(CUDA)).cpu()
    return bool((cpu.int() - gpu.int()).abs().le(1).float().mean() > 0.995)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_step.py needs a CUDA GPU")
    train = load_fashion_mnist("train")
    images = train.images
    probs = F.one_hot(train.labels, 10).float()
    syncs = {n: host_syncs(images, probs, n) for n in (10, 40)}
    print("host syncs per epoch:", syncs, flush=True)
    rows = []
    for batch in (256, 1024, 4096):
        for compiled in (False, True):
            bare = bare_rate(batch, args.steps, compiled)
            toolkit = toolkit_rate(images, probs, batch, args.steps, compiled)
            rows.append((batch, compiled, bare, toolkit))
            print(batch, compiled, f"bare {bare:.0f}, toolkit {toolkit:.0f}", flush=True)
    matches = noise_matches_cpu(load_fashion_mnist("test").images[:256])
    table = ["| images per step | torch.compile | bare step images/s | toolkit step images/s "
             "| toolkit / bare |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {b:,} | {'on' if c else 'off'} | {bare:,.0f} | {tk:,.0f} | {tk / bare:.2f} |"
              for b, c, bare, tk in rows]
    body = (f"Host syncs in one epoch of the toolkit's student step: {syncs[10]} with 10 steps, "
            f"{syncs[40]} with 40 (the count must not grow with the steps). Noise on the GPU "
            f"equals the CPU's for the same ops: {matches}.\n\n" + "\n".join(table) + "\n")
    write_section("gpu-step", "GPU: the student step against the bare step", body, "0, 1")


if __name__ == "__main__":
    main()
