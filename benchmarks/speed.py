"""Speed: the toolkit against a plain PyTorch loop, and against this machine's limit.

    python benchmarks/speed.py [--steps 30] [--batch-size 64]

Same model (tf_efficientnet_lite0 @32, drop path 0.2), same Fashion-MNIST images, same batch:

- student training: the toolkit (uint8 batches in memory, per-image RandAugment on tensors,
  channels_last, precision auto) vs the loop a typical user writes (fp32, PIL images through
  torchvision transforms with RandAugment in a DataLoader with 2 workers);
- pseudo-labeling: the toolkit's inference (channels_last, bf16 autocast where the CPU has it)
  vs a plain fp32 eval loop over a DataLoader; achieved GFLOP/s (model FLOPs x images/s) as a
  fraction of the bf16 matrix-multiply peak measured in the same run.

Every figure that matters is a ratio of two measurements of this run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from noisystudent.compression import count_flops  # noqa: E402
from noisystudent.config import TrainConfig  # noqa: E402
from noisystudent.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from noisystudent.data.loaders import ImageBatches  # noqa: E402
from noisystudent.device import resolve_precision  # noqa: E402
from noisystudent.engine import train_one_epoch  # noqa: E402
from noisystudent.inference import predict_logits  # noqa: E402
from noisystudent.optim import build_optimizer  # noqa: E402
from noisystudent.stage import build_model  # noqa: E402
from noisystudent.tasks import SupervisedTask  # noqa: E402
from noisystudent.transforms import CleanPipeline, make_augment  # noqa: E402

MODEL, SIZE = "tf_efficientnet_lite0", 32
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the offline Lite weights' normalisation


class PilImages(Dataset):
    """What a typical user's Dataset does: a PIL image per item, then the transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images.numpy(), labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i, 0]).convert("RGB")
        return self.transform(image), self.labels[i]


def plain_training(images, labels, batch_size: int, steps: int, warmup: int) -> float:
    transform = transforms.Compose([
        transforms.Resize(SIZE), transforms.RandomCrop(SIZE, padding=4),
        transforms.RandomHorizontalFlip(), transforms.RandAugment(2, 9), transforms.ToTensor(),
        transforms.Normalize(MEAN, STD)])
    loader = DataLoader(PilImages(images, labels, transform), batch_size=batch_size,
                        shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
    model = timm.create_model(MODEL, num_classes=10, drop_path_rate=0.2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seen, start = 0, None
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            seen, start = 0, time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(x)
        if step + 1 == warmup + steps:
            break
    return seen / (time.perf_counter() - start)


def toolkit_training(images, labels, batch_size: int, steps: int, warmup: int) -> float:
    config = TrainConfig(model=MODEL, pretrained="none", image_size=SIZE, batch_size=batch_size,
                         augment="randaugment", drop_path_rate=0.2, epochs=1,
                         steps_per_epoch=steps)
    device = torch.device("cpu")
    model, spec = build_model(config, 10, device)
    optimizer, scheduler = build_optimizer(model, config, warmup + steps)
    task = SupervisedTask(model, make_augment(config), spec, device=device)
    dtype = resolve_precision(config.precision, device, training=True)
    for n in (warmup, steps):
        loader = ImageBatches.training(images, labels, batch_size, device, seed=0, steps=n)
        metrics = train_one_epoch(task, loader, optimizer, scheduler, device=device,
                                  dtype=dtype, progress=False)
    return metrics["images_per_s"]


def plain_inference(images, batch_size: int) -> float:
    transform = transforms.Compose([transforms.Resize(SIZE), transforms.ToTensor(),
                                    transforms.Normalize(MEAN, STD)])
    loader = DataLoader(PilImages(images, torch.zeros(len(images), dtype=torch.int64),
                                  transform), batch_size=batch_size, num_workers=2)
    model = timm.create_model(MODEL, num_classes=10).eval()
    start = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    return len(images) / (time.perf_counter() - start)


def toolkit_inference(images, batch_size: int) -> tuple[float, int, str]:
    config = TrainConfig(model=MODEL, pretrained="none", image_size=SIZE)
    device = torch.device("cpu")
    model, spec = build_model(config, 10, device)
    model.eval()
    dtype = resolve_precision("auto", device, training=False)
    loader = ImageBatches(images, torch.zeros(len(images)), batch_size, device)
    warm_up = ImageBatches(images[:batch_size], torch.zeros(batch_size), batch_size, device)
    predict_logits(model, CleanPipeline(spec), warm_up, device=device, dtype=dtype)
    start = time.perf_counter()
    predict_logits(model, CleanPipeline(spec), loader, device=device, dtype=dtype)
    rate = len(images) / (time.perf_counter() - start)
    return rate, count_flops(model, spec), str(dtype).replace("torch.", "") if dtype else "fp32"


def bf16_matmul_peak(n: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of a large bf16 matrix multiply: what this CPU's matrix units deliver."""
    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--inference-images", type=int, default=10_000)
    parser.add_argument("--inference-batch", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    train = load_fashion_mnist("train")
    images, labels = train.images[:20_000], train.labels[:20_000]

    toolkit_train = toolkit_training(images, labels, args.batch_size, args.steps, args.warmup)
    plain_train = plain_training(images, labels, args.batch_size, args.steps, args.warmup)
    unlabeled = train.images[-args.inference_images:]
    toolkit_label, flops, label_dtype = toolkit_inference(unlabeled, args.inference_batch)
    plain_label = plain_inference(unlabeled, args.inference_batch)
    peak = bf16_matmul_peak()
    achieved = flops * toolkit_label / 1e9
    train_ratio, label_ratio = toolkit_train / plain_train, toolkit_label / plain_label

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    rows = [
        f"| student training, images/s (batch {args.batch_size}, {args.steps} steps after "
        f"{args.warmup}) | {plain_train:,.0f} | {toolkit_train:,.0f} | **{train_ratio:.1f}x** "
        f"| >= 4x: {verdict(train_ratio >= 4)} |",
        f"| pseudo-labeling, images/s (batch {args.inference_batch}, "
        f"{args.inference_images:,} images; toolkit in {label_dtype}) | {plain_label:,.0f} | "
        f"{toolkit_label:,.0f} | **{label_ratio:.1f}x** | >= 3x: {verdict(label_ratio >= 3)} |",
    ]
    body = f"""`{MODEL}` @{SIZE} ({flops / 1e6:.1f} MFLOPs per image, counted with
`torch.utils.flop_counter`), {torch.get_num_threads()} threads.

| measurement | plain PyTorch loop | toolkit | ratio | target |
| --- | ---: | ---: | ---: | --- |
{chr(10).join(rows)}

Pseudo-labeling achieves {achieved:,.1f} GFLOP/s; a {2048}x{2048} bf16 matrix multiply reaches
{peak:,.0f} GFLOP/s on this machine in the same run: **{100 * achieved / peak:.1f}%** of the peak
(target >= 25%: {verdict(achieved / peak >= 0.25)}).

The plain loop is fp32 with contiguous tensors, PIL images through torchvision transforms
(Resize, RandomCrop with padding 4, flip, RandAugment(2, 9), ToTensor, Normalize) in a
DataLoader with 2 workers; its inference loop is fp32 eval over the same kind of DataLoader
(Resize, ToTensor, Normalize)."""
    write_section("speed", "Speed: toolkit vs a plain PyTorch loop", body, "0")


if __name__ == "__main__":
    main()
