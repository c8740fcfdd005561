"""airbench's tricks on Fashion-MNIST at 28 px, each switched off (or on) against the family's
defaults: a supervised run on all 60,000 labels, so what is measured is how much a student of
the family learns in a fixed, short length.

    python benchmarks/airbench_tricks.py [--model cifar_airbench_s] [--epochs 3] [--seeds 0]
        [--only NAME,...] [--lr 0.8 --weight-decay 1e-4]

Every variant trains with ``noisystudent.stages.train`` (the one loop) into
runs/bench/airbench-tricks/MODEL-EPOCHS/NAME-sSEED and is skipped when already finished, so an
interrupted benchmark continues. Flip test-time augmentation needs no training of its own: the
finished runs are evaluated again with ``flip_tta`` on. Alternating flip (airbench: every image
flipped in every other epoch, the first epoch's flips drawn at random) is not a toolkit option;
it is built here, in the loader, to be measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, write_section  # noqa: E402

from noisystudent.core import runs  # noqa: E402
from noisystudent.core.config import TrainConfig  # noqa: E402
from noisystudent.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from noisystudent.data.loaders import ImageBatches  # noqa: E402
from noisystudent.models.inference import predict_logits  # noqa: E402
from noisystudent.models.saved import load_trained  # noqa: E402
from noisystudent.models.transforms import CleanPipeline  # noqa: E402
from noisystudent.noise import crop  # noqa: E402
from noisystudent.stages import train as train_module  # noqa: E402

# The family's training defaults for this benchmark: airbench's recipe in this loop's terms.
BASE = dict(pretrained="none", image_size=28, in_chans=1, labels_per_class=0,
            batch_size=512, optimizer="sgd", lr=0.8, momentum=0.9, weight_decay=1e-4,
            warmup_epochs=0.5, label_smoothing=0.2, ema_decay=0.99, norm_bias_lr_scale=64.0,
            augment="light", padding="reflect", drop_rate=0.0, drop_path_rate=0.0,
            precision="auto", eval_batch_size=1000)
# Each variant: (what changes against BASE, config changes, model_options changes).
VARIANTS = {
    "all tricks": ("airbench's defaults", {}, {}),
    "no whitening": ("stem trained from random init", {}, {"whiten_stem": False}),
    "no dirac": ("PyTorch's default conv init", {}, {"dirac_init": False}),
    "bn weight trains": ("BN scales train", {}, {"bn_weight": True}),
    "bn momentum 0.1": ("PyTorch's BN momentum", {}, {"bn_momentum": 0.1}),
    "no bias lr x64": ("BN shifts at the base lr", {"norm_bias_lr_scale": 1.0}, {}),
    "no EMA": ("the last weights evaluated", {"ema_decay": 0.0}, {}),
    "no label smoothing": ("label smoothing 0", {"label_smoothing": 0.0}, {}),
    "alternating flip": ("flip alternates per image and epoch", {}, {}),
}


class AlternatingFlipBatches(ImageBatches):
    """airbench's alternating flip: image i is mirrored in epoch e when base(i) xor (e odd),
    base drawn once at random; the noise then crops without flipping."""

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed)
        base = torch.rand(len(self.images), generator=gen) < 0.5
        for batch in super().__iter__():
            flip = (base[batch["index"].cpu()] ^ bool(self.epoch % 2)).view(-1, 1, 1, 1)
            images = batch["images"]
            yield {**batch, "images": torch.where(flip.to(images.device), images.flip(-1),
                                                  images)}


def crop_only(images: torch.Tensor, padding_mode: str = "constant") -> torch.Tensor:
    b, _, h, _ = images.shape
    pad = round(h * crop.PAD_FRACTION)
    dy = torch.randint(0, 2 * pad + 1, (b,))
    dx = torch.randint(0, 2 * pad + 1, (b,))
    return crop.translate_flip(images, dy, dx, torch.zeros(b, dtype=torch.bool), pad,
                               padding_mode=padding_mode)


@contextmanager
def alternating_flip():
    with mock.patch.object(train_module, "ImageBatches", AlternatingFlipBatches), \
            mock.patch("noisystudent.noise.crop_flip", crop_only):
        yield


def train_variant(name: str, model: str, epochs: int, seed: int, out: Path) -> dict:
    _, changes, options = VARIANTS[name]
    config = TrainConfig(**{**BASE, "model": model, "epochs": epochs, "seed": seed,
                            **changes, "model_options": options})
    if not (out / runs.METRICS).is_file():
        resume = (out / runs.CONFIG).is_file()
        patch = alternating_flip() if name == "alternating flip" else nullcontext()
        with patch:
            train_module.train(None if resume else config, out, resume=resume, quiet=True)
    metrics = runs.read_json(out / runs.METRICS)
    seconds = sum(r["seconds"] for r in runs.read_jsonl(out / runs.METRICS_LOG))
    return {"top1": metrics["test_top1"], "seconds": seconds, "tta": flip_tta_top1(out)}


def flip_tta_top1(run: Path) -> float:
    """The finished run's model evaluated again, the logits averaged with its mirror's."""
    trained = load_trained(run, torch.device("cpu"))
    trained.model.flip_tta = True
    test = load_fashion_mnist("test")
    loader = ImageBatches(test.images, test.labels, 1000, torch.device("cpu"))
    logits = predict_logits(trained.model, CleanPipeline(trained.spec), loader,
                            device=torch.device("cpu"), dtype=None)
    return (logits.argmax(1) == test.labels).float().mean().item()


def cell(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifar_airbench_s")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--lr", type=float, default=BASE["lr"])
    parser.add_argument("--weight-decay", type=float, default=BASE["weight_decay"])
    args = parser.parse_args()
    tuned = (args.lr, args.weight_decay) != (BASE["lr"], BASE["weight_decay"])
    BASE.update(lr=args.lr, weight_decay=args.weight_decay)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(VARIANTS)
    root = WORK / "airbench-tricks" / (f"{args.model}-{args.epochs}"
                                       + (f"-lr{args.lr}-wd{args.weight_decay}" if tuned else ""))
    results = {}
    for name in names:
        results[name] = [train_variant(name, args.model, args.epochs, seed,
                                       root / f"{name.replace(' ', '-')}-s{seed}")
                         for seed in seeds]
        print(name, results[name], flush=True)
    base = results.get("all tricks")
    rows = ["| variant | what changes | test top-1 % | vs all tricks | with flip TTA % | "
            "train seconds |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name, values in results.items():
        top1 = [v["top1"] for v in values]
        gap = (f"{100 * (statistics.mean(top1) - statistics.mean(v['top1'] for v in base)):+.2f}"
               if base and name != "all tricks" else "")
        rows.append(f"| {name} | {VARIANTS[name][0]} | {cell(top1)} | {gap} | "
                    f"{cell([v['tta'] for v in values])} | "
                    f"{statistics.mean(v['seconds'] for v in values):,.0f} |")
    body = (f"`{args.model}` on all 60,000 Fashion-MNIST labels, {args.epochs} epochs at batch "
            f"512, 28 px, one channel: Nesterov SGD peak lr {BASE['lr']} with "
            f"{BASE['warmup_epochs']} warm-up epochs then cosine, weight decay "
            f"{BASE['weight_decay']}, pad-crop (reflect) and flip, `precision: auto`. "
            "Each row switches one trick against the first row; flip TTA is the same model "
            "evaluated with its mirror.\n\n" + "\n".join(rows) + "\n")
    if tuned or args.epochs != 3:  # a probe of the lr or the length: printed, not the table
        print("\n".join(rows))
        return
    write_section(f"airbench-tricks-{args.model}", f"airbench's tricks, one at a time "
                  f"({args.model}, {args.epochs} epochs, all labels)", body, args.seeds)


if __name__ == "__main__":
    main()
