"""A user's own folder of photos, made from Fashion-MNIST, for the recipes that must travel
(issue 29): the plan and the budget are judged on it as well as on the benchmark's own split.

    python benchmarks/own_photos.py --out runs/bench/photos [--labels-per-class 20]
        [--unlabeled 2000 20000] [--test 1000] [--seed 0]

It writes, from Fashion-MNIST's *training* images (its test images for the test folder):

    OUT/labeled/CLASS/*.{jpg,png}        labels-per-class images per class (an ImageFolder)
    OUT/unlabeled-N/PART/*.{jpg,png}     N images without labels, in nested folders, for each N
    OUT/test/CLASS/*.{jpg,png}           the test folder

Every image is resized to its own random size between 64 and 96 px (bilinear), given a mild
random colour tint (photos are RGB), and saved as RGB JPEG (quality 90) or PNG, half each.
The unlabeled folders never hold a labeled image; the smaller one is the first N of the
larger one, so the two regimes differ only in the pile's size. Files are written to a
temporary name and renamed; a folder already complete is kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402

from noisystudent.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist  # noqa: E402

SIZES = (64, 96)
PER_FOLDER = 500  # unlabeled images per nested folder


def photo(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 28 px grayscale image as an RGB photo of a random size in SIZES, tinted."""
    size = int(rng.integers(SIZES[0], SIZES[1] + 1))
    gray = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    tint = rng.uniform(0.8, 1.0, size=3)
    rgb = np.asarray(gray, dtype=np.float32)[..., None] * tint
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def save(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".jpg":
        image.save(tmp, format="JPEG", quality=90)
    else:
        image.save(tmp, format="PNG")
    tmp.replace(path)


def write(images: np.ndarray, names: list[Path], folder: Path, seed: int) -> None:
    """Each image to folder/name, once: a folder whose marker exists is complete."""
    done = folder / ".complete"
    if done.is_file():
        return
    rng = np.random.default_rng(seed)
    for image, name in zip(images, names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save(photo(image, rng), path)
    done.write_text(f"{len(names)} images\n")


def suffix(i: int) -> str:
    return ".jpg" if i % 2 == 0 else ".png"


def build(out: Path, labels_per_class: int, unlabeled: list[int], test: int, seed: int) -> None:
    train, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    images, labels = train.images[:, 0].numpy(), train.labels.numpy()
    order = rng.permutation(len(labels))
    labeled = np.concatenate([order[labels[order] == c][:labels_per_class]
                              for c in range(len(FASHION_MNIST_CLASSES))])
    pile = order[~np.isin(order, labeled)][:max(unlabeled, default=0)]  # shuffled order

    def class_names(indices: np.ndarray, source_labels: np.ndarray) -> list[Path]:
        return [Path(FASHION_MNIST_CLASSES[source_labels[i]].replace("/", "-"))
                / f"{k:05d}{suffix(k)}" for k, i in enumerate(indices)]

    write(images[labeled], class_names(labeled, labels), out / "labeled", seed)
    for n in sorted(unlabeled):
        names = [Path(f"part{k // PER_FOLDER:03d}") / f"{k:06d}{suffix(k)}" for k in range(n)]
        write(images[pile[:n]], names, out / f"unlabeled-{n}", seed + 1)
    test_images, test_labels = test_set.images[:, 0].numpy(), test_set.labels.numpy()
    chosen = np.random.default_rng(seed + 2).permutation(len(test_labels))[:test]
    write(test_images[chosen], class_names(chosen, test_labels), out / "test", seed + 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "photos")
    parser.add_argument("--labels-per-class", type=int, default=20)
    parser.add_argument("--unlabeled", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, args.labels_per_class, args.unlabeled, args.test, args.seed)
    print(f"wrote {args.out}: labeled/ ({args.labels_per_class} per class), "
          + ", ".join(f"unlabeled-{n}/" for n in sorted(args.unlabeled)) + f", test/ ({args.test})")


if __name__ == "__main__":
    main()
