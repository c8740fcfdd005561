"""A user's odd folder of images, made from Fashion-MNIST: small gray pictures in every
encoding a folder gathers, some of them broken, a few hundred labels (issue 38's second
regime, beside the photo test bed of ``own_photos.py``).

    python benchmarks/odd_folder.py --out runs/bench/odd [--labels-per-class 40]
        [--unlabeled 2001] [--test 1000] [--broken 0.1] [--seed 0]

It writes, from Fashion-MNIST's *training* images (its test images for the test folder):

    OUT/train/CLASS/*           labels-per-class files per class, about ``broken`` of them
                                unreadable (empty, cut short, or not an image at all)
    OUT/unlabeled/PART/*        the unlabeled files, broken ones among them
    OUT/test/CLASS/*            the test folder (all readable)

Every picture is 48 px and gray, saved in turn as 8-bit gray PNG, gray JPEG, RGB JPEG
(quality 75), BMP, WebP, TIFF, a palette GIF, a gray PNG with an alpha channel and a 16-bit
gray PNG. The pictures are another draw of the training images than the photo test bed's.
Files are written to a temporary name and renamed; a folder already complete is kept.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402

from noisystudent.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist  # noqa: E402

SIZE = 48
PER_FOLDER = 500


def _gray(image: Image.Image, suffix: str, fmt: str, **kw) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return suffix, buffer.getvalue()


ENCODINGS = [
    lambda im: _gray(im, ".png", "PNG"),
    lambda im: _gray(im, ".jpg", "JPEG", quality=75),
    lambda im: _gray(im.convert("RGB"), ".jpeg", "JPEG", quality=75),
    lambda im: _gray(im, ".bmp", "BMP"),
    lambda im: _gray(im, ".webp", "WEBP", quality=80),
    lambda im: _gray(im, ".tif", "TIFF"),
    lambda im: _gray(im.convert("P"), ".gif", "GIF"),
    lambda im: _gray(im.convert("LA"), ".png", "PNG"),
    lambda im: _gray(Image.fromarray(np.asarray(im, dtype=np.uint16) * 257), ".png", "PNG"),
]


def broken(k: int, data: bytes, suffix: str) -> tuple[str, bytes]:
    """An unreadable file in turn: empty, cut to a third, or text under an image's name."""
    kind = k % 3
    if kind == 0:
        return suffix, b""
    if kind == 1:
        return suffix, data[: len(data) // 3]
    return ".png", b"not an image: a note saved with the wrong name\n"


def write(images: np.ndarray, names: list[Path], folder: Path, broken_share: float,
          seed: int) -> int:
    """Each image under folder/name with its encoding's suffix, once (a folder whose marker
    exists is complete); about ``broken_share`` of them unreadable. Returns how many are."""
    done = folder / ".complete"
    if done.is_file():
        return int(done.read_text().split()[2])
    rng = np.random.default_rng(seed)
    unreadable = 0
    for k, (image, name) in enumerate(zip(images, names)):
        picture = Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR)
        suffix, data = ENCODINGS[k % len(ENCODINGS)](picture)
        if rng.random() < broken_share:
            suffix, data = broken(unreadable, data, suffix)
            unreadable += 1
        path = folder / name.with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    done.write_text(f"{len(names)} files, {unreadable} unreadable\n")
    return unreadable


def build(out: Path, labels_per_class: int, unlabeled: int, test: int, broken_share: float,
          seed: int) -> dict[str, int]:
    train, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    rng = np.random.default_rng(1000 + seed)
    images, labels = train.images[:, 0].numpy(), train.labels.numpy()
    order = rng.permutation(len(labels))
    labeled = np.concatenate([order[labels[order] == c][:labels_per_class]
                              for c in range(len(FASHION_MNIST_CLASSES))])
    pile = order[~np.isin(order, labeled)][:unlabeled]

    def class_names(indices: np.ndarray, source_labels: np.ndarray) -> list[Path]:
        return [Path(FASHION_MNIST_CLASSES[source_labels[i]].replace("/", "-")) / f"img{k:05d}"
                for k, i in enumerate(indices)]

    counts = {"train": write(images[labeled], class_names(labeled, labels), out / "train",
                             broken_share, seed)}
    names = [Path(f"part{k // PER_FOLDER:03d}") / f"{k:06d}" for k in range(len(pile))]
    counts["unlabeled"] = write(images[pile], names, out / "unlabeled", broken_share, seed + 1)
    test_images, test_labels = test_set.images[:, 0].numpy(), test_set.labels.numpy()
    chosen = np.random.default_rng(seed + 2).permutation(len(test_labels))[:test]
    counts["test"] = write(test_images[chosen], class_names(chosen, test_labels), out / "test",
                           0.0, seed + 2)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "odd")
    parser.add_argument("--labels-per-class", type=int, default=40)
    parser.add_argument("--unlabeled", type=int, default=2001)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--broken", type=float, default=0.1,
                        help="share of the labeled and unlabeled files made unreadable")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build(args.out, args.labels_per_class, args.unlabeled, args.test, args.broken,
                   args.seed)
    print(f"wrote {args.out}: train/ ({10 * args.labels_per_class} files, {counts['train']} "
          f"unreadable), unlabeled/ ({args.unlabeled}, {counts['unlabeled']} unreadable), "
          f"test/ ({args.test})")


if __name__ == "__main__":
    main()
