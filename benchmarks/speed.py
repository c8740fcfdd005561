"""Speed: the toolkit's student step against the bare model step, the commit before the speed
work, and a plain PyTorch loop; pseudo-labeling against the machine's fastest matrix product.

    python benchmarks/speed.py [--device cpu|cuda] [--batch-size 256] [--before 4615512]

Same model (tf_efficientnet_lite0 @32, drop path 0.2), same Fashion-MNIST images, same batch,
same precision (``precision: auto`` for the device), every figure from this one run:

- bare step: forward, backward and fused AdamW on a ready input tensor (channels_last); the
  model's own speed, with no data, noise or bookkeeping;
- toolkit student step: the Noisy Student step (1 labeled : 3 pseudo-labeled images, soft
  labels, pad-crop, flip, RandAugment 2 ops at magnitude 9, stochastic depth) through
  ``train_one_epoch``;
- the commit before the speed work (CPU only): its own ``benchmarks/speed.py``'s toolkit step,
  run from ``git archive`` of that commit in a subprocess, beside today's same step;
- plain loop: what a typical user writes (fp32, PIL images through torchvision transforms with
  RandAugment in a DataLoader with 2 workers);
- pseudo-labeling: the toolkit's inference against a plain eval loop; its achieved GFLOP/s
  against the fastest large matrix product of this machine (bf16 only where the hardware has
  it; a CPU without bf16 units emulates it, far below its fp32 speed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_section  # noqa: E402

from noisystudent.core.config import StudentConfig, TrainConfig  # noqa: E402
from noisystudent.core.device import autocast, has_bf16_units, resolve_precision  # noqa: E402
from noisystudent.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from noisystudent.data.loaders import ImageBatches, LabeledAndPseudoBatches  # noqa: E402
from noisystudent.deploy.cost import count_flops  # noqa: E402
from noisystudent.models.inference import predict_logits  # noqa: E402
from noisystudent.models.precision import training_precision  # noqa: E402
from noisystudent.models.transforms import CleanPipeline  # noqa: E402
from noisystudent.noise import make_augment  # noqa: E402
from noisystudent.stages.stage import build_model  # noqa: E402
from noisystudent.training.engine import train_one_epoch  # noqa: E402
from noisystudent.training.optim import build_optimizer, make_optimizer  # noqa: E402
from noisystudent.training.tasks import NoisyStudentTask, SupervisedTask  # noqa: E402

MODEL, SIZE = "tf_efficientnet_lite0", 32
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the offline Lite weights' normalisation
# The commit before the speed work (issue 12): per-image noise, host syncs every step.
BEFORE = "4615512"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PilImages(Dataset):
    """What a typical user's Dataset does: a PIL image per item, then the transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images.numpy(), labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i, 0]).convert("RGB")
        return self.transform(image), self.labels[i]


def bare_step(batch: int, steps: int, warmup: int, device: torch.device, dtype) -> float:
    config = TrainConfig(model=MODEL, pretrained="none", image_size=SIZE, drop_path_rate=0.2)
    model, _ = build_model(config, 10, device)
    optimizer = make_optimizer("adamw", [{"params": list(model.parameters())}], 1e-3, 0.0)
    x = torch.randn(batch, 3, SIZE, SIZE, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def student_step(images, labels, batch: int, steps: int, warmup: int,
                 device: torch.device, dtype) -> float:
    """The toolkit's Noisy Student step: batch/4 labeled + 3 batch/4 pseudo-labeled images."""
    config = StudentConfig(pseudo_labels="x", model=MODEL, pretrained="none", image_size=SIZE,
                           batch_size=batch // 4, unlabeled_ratio=3, augment="randaugment",
                           drop_path_rate=0.2, epochs=1)
    model, spec = build_model(config, 10, device)
    task = NoisyStudentTask(model, make_augment(config), spec, device=device)
    optimizer, scheduler = build_optimizer(model, config, warmup + steps)
    probs = F.one_hot(labels, 10).float()

    def loader(n: int) -> LabeledAndPseudoBatches:
        return LabeledAndPseudoBatches(
            ImageBatches.training(images[:1000], labels[:1000], batch // 4, device, seed=0,
                                  steps=n),
            ImageBatches.training(images, probs, batch // 4 * 3, device, seed=1, steps=n))

    for n in (warmup, steps):
        metrics = train_one_epoch(task, loader(n), optimizer, scheduler, device=device,
                                  dtype=dtype, progress=False)
    return metrics["images_per_s"]


def toolkit_training(images, labels, batch_size: int, steps: int, warmup: int) -> float:
    """The same function as in the commit before, on today's code: a supervised step with the
    student's noise, so the two commits run one definition of the step."""
    config = TrainConfig(model=MODEL, pretrained="none", image_size=SIZE, batch_size=batch_size,
                         augment="randaugment", drop_path_rate=0.2, epochs=1,
                         steps_per_epoch=steps)
    device = torch.device("cpu")
    model, spec = build_model(config, 10, device)
    optimizer, scheduler = build_optimizer(model, config, warmup + steps)
    task = SupervisedTask(model, make_augment(config), spec, device=device)
    dtype = training_precision(config, device)
    for n in (warmup, steps):
        loader = ImageBatches.training(images, labels, batch_size, device, seed=0, steps=n)
        metrics = train_one_epoch(task, loader, optimizer, scheduler, device=device,
                                  dtype=dtype, progress=False)
    return metrics["images_per_s"]


_BEFORE_RUN = """
import json, sys
root = sys.argv[1]
sys.path[:0] = [root, root + "/benchmarks"]
import noisystudent
assert noisystudent.__file__.startswith(root), noisystudent.__file__
import speed
train = speed.load_fashion_mnist("train")
n = int(sys.argv[2])
rate = speed.toolkit_training(train.images[:n], train.labels[:n], *map(int, sys.argv[3:]))
print(json.dumps(rate))
"""


def toolkit_training_at(commit: str, images: int, batch: int, steps: int, warmup: int) -> float:
    """The toolkit step of an earlier commit, from its own code, in a subprocess."""
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        out = subprocess.run([sys.executable, "-c", _BEFORE_RUN, tree, str(images), str(batch),
                              str(steps), str(warmup)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the toolkit at {commit} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plain_training(images, labels, batch_size: int, steps: int, warmup: int,
                   device: torch.device) -> float:
    transform = transforms.Compose([
        transforms.Resize(SIZE), transforms.RandomCrop(SIZE, padding=4),
        transforms.RandomHorizontalFlip(), transforms.RandAugment(2, 9), transforms.ToTensor(),
        transforms.Normalize(MEAN, STD)])
    loader = DataLoader(PilImages(images, labels, transform), batch_size=batch_size,
                        shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
    model = timm.create_model(MODEL, num_classes=10, drop_path_rate=0.2).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step + 1 == warmup + steps:
            break
    synchronize(device)
    return batch_size * steps / (time.perf_counter() - start)


def plain_inference(images, batch_size: int, device: torch.device) -> float:
    transform = transforms.Compose([transforms.Resize(SIZE), transforms.ToTensor(),
                                    transforms.Normalize(MEAN, STD)])
    loader = DataLoader(PilImages(images, torch.zeros(len(images), dtype=torch.int64),
                                  transform), batch_size=batch_size, num_workers=2)
    model = timm.create_model(MODEL, num_classes=10).to(device).eval()
    start = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            model(x.to(device))
    synchronize(device)
    return len(images) / (time.perf_counter() - start)


def toolkit_inference(images, batch_size: int, device: torch.device) -> tuple[float, int, str]:
    config = TrainConfig(model=MODEL, pretrained="none", image_size=SIZE)
    model, spec = build_model(config, 10, device)
    model.eval()
    dtype = resolve_precision("auto", device, training=False)
    loader = ImageBatches(images, torch.zeros(len(images)), batch_size, device)
    warm_up = ImageBatches(images[:batch_size], torch.zeros(batch_size), batch_size, device)
    predict_logits(model, CleanPipeline(spec), warm_up, device=device, dtype=dtype)
    synchronize(device)
    start = time.perf_counter()
    predict_logits(model, CleanPipeline(spec), loader, device=device, dtype=dtype)
    synchronize(device)
    rate = len(images) / (time.perf_counter() - start)
    return rate, count_flops(model, spec), str(dtype).replace("torch.", "") if dtype else "fp32"


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048,
                seconds: float = 2.0) -> float:
    """GFLOP/s of repeated n x n matrix products in ``dtype`` (about ``seconds`` long)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            a @ b
        synchronize(device)
        count += 4
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def yardstick(device: torch.device) -> tuple[float, str]:
    """The fastest matrix product this machine has: fp32 always, bf16 where the hardware has
    bf16 units (a GPU; a CPU with AMX or AVX-512 BF16)."""
    dtypes = [torch.float32]
    if device.type == "cuda" or has_bf16_units():
        dtypes.append(torch.bfloat16)
    peaks = {dtype: matmul_peak(device, dtype) for dtype in dtypes}
    best = max(peaks, key=peaks.get)
    return peaks[best], str(best).replace("torch.", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (default 256 on a CPU, 1024 on a GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; best kept")
    parser.add_argument("--before", default=BEFORE,
                        help="the earlier commit to compare on the CPU ('none' to skip)")
    parser.add_argument("--inference-images", type=int, default=10_000)
    parser.add_argument("--inference-batch", type=int, default=512)
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch_size or (1024 if gpu else 256)
    steps = args.steps or (40 if gpu else 8)
    warmup = args.warmup * 2 if gpu else args.warmup
    dtype = training_precision(TrainConfig(model=MODEL, pretrained="none", image_size=SIZE,
                                           batch_size=batch), device)
    torch.manual_seed(0)
    train = load_fashion_mnist("train")
    images, labels = train.images[:20_000], train.labels[:20_000]
    rates: dict[str, float] = {}

    def measure(name: str, function, *a) -> float:
        """Run and keep the best rate of this name (rounds alternate, so load spikes on a
        shared machine hit both sides of a ratio alike)."""
        start = time.perf_counter()
        rate = function(*a)
        rates[name] = max(rate, rates.get(name, 0.0))
        say(f"{name}: {rate:,.0f} images/s ({time.perf_counter() - start:.0f} s)")
        return rate

    say(f"device {device}, batch {batch}, {steps} timed steps after {warmup}, precision "
        f"{dtype or 'fp32'}, best of {args.rounds} rounds")
    # A process's first model runs a few slow steps on a VM (fresh memory); not timed.
    bare_step(batch, 1, warmup, device, dtype)
    compare = not gpu and args.before != "none"
    for _ in range(args.rounds):
        measure("bare step", bare_step, batch, steps, warmup, device, dtype)
        measure("toolkit student step", student_step, images, labels, batch, steps, warmup,
                device, dtype)
        if compare:
            measure("toolkit step, this commit", toolkit_training, images, labels, batch,
                    steps, warmup)
            measure(f"toolkit step, commit {args.before}", toolkit_training_at, args.before,
                    len(images), batch, steps, warmup)
    measure("plain loop", plain_training, images, labels, batch, steps, warmup, device)
    unlabeled = train.images[-args.inference_images:]
    start = time.perf_counter()
    label_rate, flops, label_dtype = toolkit_inference(unlabeled, args.inference_batch, device)
    say(f"toolkit pseudo-labeling: {label_rate:,.0f} images/s "
        f"({time.perf_counter() - start:.0f} s)")
    measure("plain pseudo-labeling", plain_inference, unlabeled, args.inference_batch, device)
    peak, peak_dtype = yardstick(device)
    say(f"fastest matrix product: {peak:,.0f} GFLOP/s ({peak_dtype})")
    achieved = flops * label_rate / 1e9

    bare, student, plain = rates["bare step"], rates["toolkit student step"], rates["plain loop"]
    rows = [
        f"| bare step (ready input tensor, forward, backward, fused AdamW) | {bare:,.0f} | 1.00 |",
        f"| toolkit student step ({batch // 4} labeled + {batch // 4 * 3} pseudo-labeled, "
        f"noise, stochastic depth) | {student:,.0f} | **{student / bare:.2f}** |",
        f"| plain PyTorch loop (PIL, torchvision RandAugment, DataLoader, 2 workers) | "
        f"{plain:,.0f} | {plain / bare:.2f} |",
    ]
    table = "\n".join(["| step | images/s | vs bare step |", "| --- | ---: | ---: |", *rows])
    lines = [f"toolkit student step / bare step: **{student / bare:.2f}** (goal >= 0.9)",
             f"toolkit student step / plain loop: **{student / plain:.1f}x** (goal >= 4x)"]
    if compare:
        now, then = rates["toolkit step, this commit"], rates[f"toolkit step, commit {args.before}"]
        lines.append(f"the toolkit step (supervised, the same noise, batch {batch}) at this "
                     f"commit against commit {args.before}, before the speed work: {now:,.0f} "
                     f"against {then:,.0f} images/s, **{now / then:.2f}x** (goal >= 1.5x)")
    lines.append(f"pseudo-labeling: toolkit ({label_dtype}) {label_rate:,.0f} images/s against "
                 f"the plain loop's {rates['plain pseudo-labeling']:,.0f}, "
                 f"**{label_rate / rates['plain pseudo-labeling']:.1f}x**; {achieved:,.1f} "
                 f"GFLOP/s, {100 * achieved / peak:.1f}% of this machine's fastest 2048x2048 "
                 f"matrix product ({peak:,.0f} GFLOP/s in {peak_dtype})")
    body = (f"`{MODEL}` @{SIZE} ({flops / 1e6:.1f} MFLOPs per image, counted with "
            f"`torch.utils.flop_counter`) on {device.type}, batch {batch}, {steps} timed steps "
            f"after {warmup} warm-up steps (best of {args.rounds} alternating rounds), "
            f"precision {dtype or 'fp32'} (`precision: auto`), "
            f"{torch.get_num_threads()} threads.\n\n{table}\n\n"
            + "\n".join(f"- {line}" for line in lines) + "\n")
    name = "speed" if not gpu else "speed-gpu"
    write_section(name, f"Speed: the student step against the bare step ({device.type})", body,
                  "0")


if __name__ == "__main__":
    main()
