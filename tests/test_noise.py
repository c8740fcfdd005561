"""Tests of the batched student noise (the ``noise`` package) against torchvision, per image.

Every RandAugment op, forced for the whole batch, is compared on real Fashion-MNIST images
(one channel, and three channels made of three different images) with torchvision's
``v2.functional`` op called on each image with the magnitude of torchvision's own
``RandAugment._AUGMENTATION_SPACE``. On this CPU the two agree bit for bit; the tolerances
only leave room for float rounding that another device or build could do differently:

- colour ops (a float result truncated to uint8): every pixel within 1 level and at most 0.5% of
  the pixels off at all;
- geometric ops (nearest-neighbour sampling: a pixel centre that falls on a tie can take the
  neighbour, which can be any value away): at most 0.5% of the pixels different, and a mean
  absolute difference under 1 level.

Each op is also compared with a deliberately wrong reference (opposite sign, wrong centre,
wrong factor, one bit fewer, ...) which must fail the same tolerance, so the tolerance can
tell a wrong implementation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from noisystudent.core.config import StudentConfig
from noisystudent.noise import BatchedNoise, make_augment, no_augment
from noisystudent.noise.crop import crop_flip, translate_flip
from noisystudent.noise.cutout import cutout, cutout_at
from noisystudent.noise.randaugment import OPS, BatchedRandAugment

from .conftest import fashion_mnist_available

GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
NEAREST = v2.InterpolationMode.NEAREST


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST not found")
    from noisystudent.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist("test").images[:96].clone()


def _low_contrast(images: torch.Tensor) -> torch.Tensor:
    """Real images squeezed into a different intensity range per channel, so AutoContrast has
    something to stretch (Fashion-MNIST images already span 0..255)."""
    c = images.shape[1]
    scale = torch.tensor([0.5, 0.3, 0.7][:c]).view(1, c, 1, 1)
    offset = torch.tensor([60.0, 100.0, 20.0][:c]).view(1, c, 1, 1)
    return (images.float() * scale + offset).round().to(torch.uint8)


def _batch(real: torch.Tensor, kind: str) -> torch.Tensor:
    gray = real[:32]
    rgb = torch.cat([real[:32], real[32:64], real[64:96]], dim=1)  # three different images
    return {"gray": gray, "rgb": rgb,
            "gray_low": _low_contrast(gray), "rgb_low": _low_contrast(rgb)}[kind]


# --------------------------------------------------------------------------- reference


def tv_magnitude(name: str, magnitude: int, negative: bool, height: int, width: int) -> float:
    """The magnitude torchvision's RandAugment would use (its own table, not ours)."""
    magnitudes_fn, signed = v2.RandAugment._AUGMENTATION_SPACE[name]
    magnitudes = magnitudes_fn(31, height, width)
    if magnitudes is None:
        return 0.0
    value = float(magnitudes[magnitude])
    return -value if signed and negative else value


def tv_op(image: torch.Tensor, name: str, mag: float) -> torch.Tensor:
    """One image through torchvision's public v2.functional op, with the arguments of
    ``_AutoAugmentBase._apply_image_or_video_transform``."""
    if name == "Identity":
        return image
    if name == "ShearX":
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0,
                         shear=[math.degrees(math.atan(mag)), 0.0], interpolation=NEAREST,
                         fill=0, center=[0, 0])
    if name == "ShearY":
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0,
                         shear=[0.0, math.degrees(math.atan(mag))], interpolation=NEAREST,
                         fill=0, center=[0, 0])
    if name == "TranslateX":
        return TF.affine(image, angle=0.0, translate=[int(mag), 0], scale=1.0,
                         shear=[0.0, 0.0], interpolation=NEAREST, fill=0)
    if name == "TranslateY":
        return TF.affine(image, angle=0.0, translate=[0, int(mag)], scale=1.0,
                         shear=[0.0, 0.0], interpolation=NEAREST, fill=0)
    if name == "Rotate":
        return TF.rotate(image, angle=mag, interpolation=NEAREST, fill=0)
    if name == "Brightness":
        return TF.adjust_brightness(image, brightness_factor=1.0 + mag)
    if name == "Color":
        return TF.adjust_saturation(image, saturation_factor=1.0 + mag)
    if name == "Contrast":
        return TF.adjust_contrast(image, contrast_factor=1.0 + mag)
    if name == "Sharpness":
        return TF.adjust_sharpness(image, sharpness_factor=1.0 + mag)
    if name == "Posterize":
        return TF.posterize(image, bits=int(mag))
    if name == "Solarize":
        return TF.solarize(image, threshold=255.0 * mag)
    if name == "AutoContrast":
        return TF.autocontrast(image)
    if name == "Equalize":
        return TF.equalize(image)
    raise ValueError(name)


def per_image(fn, images: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(image) for image in images])


def close(ours: torch.Tensor, theirs: torch.Tensor, geometric: bool) -> bool:
    """The tolerances of the module docstring."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.uint8
    diff = (ours.int() - theirs.int()).abs()
    off = (diff > 0).float().mean().item()
    if geometric:
        return off <= 0.005 and diff.float().mean().item() < 1.0
    return diff.max().item() <= 1 and off <= 0.005


def wrong_references(name: str, mag: float, images: torch.Tensor):
    """References with one deliberate mistake each; ours must not pass as any of them."""
    c = images.shape[1]
    wrong = {
        "ShearX": [
            lambda im: tv_op(im, "ShearX", -mag),  # wrong sign
            lambda im: TF.affine(im, angle=0.0, translate=[0, 0], scale=1.0,  # wrong centre
                                 shear=[math.degrees(math.atan(mag)), 0.0],
                                 interpolation=NEAREST, fill=0),
        ],
        "ShearY": [
            lambda im: tv_op(im, "ShearY", -mag),
            lambda im: TF.affine(im, angle=0.0, translate=[0, 0], scale=1.0,
                                 shear=[0.0, math.degrees(math.atan(mag))],
                                 interpolation=NEAREST, fill=0),
        ],
        "TranslateX": [
            lambda im: tv_op(im, "TranslateX", -mag),
            lambda im: tv_op(im, "TranslateX", mag + math.copysign(1, mag)),  # 1 px too far
            lambda im: tv_op(im, "TranslateY", mag),  # wrong axis
        ],
        "TranslateY": [
            lambda im: tv_op(im, "TranslateY", -mag),
            lambda im: tv_op(im, "TranslateY", mag + math.copysign(1, mag)),
            lambda im: tv_op(im, "TranslateX", mag),
        ],
        "Rotate": [
            lambda im: tv_op(im, "Rotate", -mag),
            lambda im: TF.rotate(im, angle=mag, interpolation=NEAREST, fill=0,
                                 center=[0, 0]),  # about the corner
            lambda im: tv_op(im, "Rotate", mag + 3),  # 3 degrees off
        ],
        "Brightness": [
            lambda im: tv_op(im, "Brightness", -mag),
            lambda im: tv_op(im, "Brightness", mag + 0.05),
        ],
        "Contrast": [
            lambda im: tv_op(im, "Contrast", -mag),
            lambda im: tv_op(im, "Contrast", mag + 0.05),
        ],
        "Sharpness": [
            lambda im: tv_op(im, "Sharpness", -mag),
            lambda im: tv_op(im, "Sharpness", mag + 0.1),
        ],
        "Posterize": [lambda im: TF.posterize(im, bits=int(mag) - 1)],
        "Solarize": [lambda im: TF.solarize(im, threshold=255.0 * mag - 20)],
        "AutoContrast": [
            lambda im: im,
            # one min/max over all channels instead of per channel (differs on rgb only)
            lambda im: ((im.float() - im.float().amin()) * (255 / (im.float().amax()
                        - im.float().amin()))).clamp_(0, 255).to(torch.uint8),
        ],
        "Equalize": [lambda im: im, lambda im: TF.autocontrast(im)],
    }
    if c == 3:
        # Contrast blending with the mean of each channel instead of the grayscale mean
        wrong["Contrast"].append(
            lambda im: im.float().mul(1 + mag).add_(
                im.float().mean(dim=(-2, -1), keepdim=True), alpha=-mag)
            .clamp_(0, 255).to(torch.uint8))
        wrong["Color"] = [lambda im: tv_op(im, "Color", -mag),
                          lambda im: tv_op(im, "Color", mag + 0.05),
                          lambda im: tv_op(im, "Contrast", mag)]
    else:
        wrong["AutoContrast"] = wrong["AutoContrast"][:1]
    return wrong.get(name, [])


# --------------------------------------------------------------------------- each op


@pytest.mark.parametrize("kind", ["gray", "rgb", "gray_low", "rgb_low"])
@pytest.mark.parametrize("name", OPS)
def test_each_op_matches_torchvision_per_image(real, name, kind):
    images = _batch(real, kind)
    h, w = images.shape[-2:]
    geometric = name in GEOMETRIC
    for magnitude in (9, 17, 30):
        augment = BatchedRandAugment(num_ops=1, magnitude=magnitude)
        for negative in (False, True):
            mag = tv_magnitude(name, magnitude, negative, h, w)
            ours = augment.apply_op(images, OPS.index(name), negative)
            theirs = per_image(lambda im, mag=mag: tv_op(im, name, mag), images)
            assert close(ours, theirs, geometric), (name, kind, magnitude, negative)
            if magnitude == 9 and not (name == "AutoContrast" and not kind.endswith("low")):
                for k, wrong in enumerate(wrong_references(name, mag, images)):
                    assert not close(ours, per_image(wrong, images), geometric), \
                        f"{name} {kind} negative={negative}: wrong reference {k} also passes"


def test_ops_change_the_images(real):
    """The comparison above is not between two no-ops: at magnitude 9 every op but Identity
    (and Color on one channel, a no-op in torchvision too) changes a real batch."""
    for kind in ("gray_low", "rgb_low"):
        images = _batch(real, kind)
        augment = BatchedRandAugment(num_ops=1, magnitude=9)
        for k, name in enumerate(OPS):
            changed = (augment.apply_op(images, k, True) != images).float().mean().item()
            if name == "Identity" or (name == "Color" and images.shape[1] == 1):
                assert changed == 0
            else:
                assert changed > 0.02, (name, kind, changed)


def test_per_image_ops_and_signs_match_torchvision(real):
    """Images with different ops and signs in one call, each as torchvision would do it."""
    images = _batch(real, "rgb")
    augment = BatchedRandAugment(num_ops=1, magnitude=9)
    op = torch.arange(32) % len(OPS)
    negative = (torch.arange(32) // len(OPS)) % 2 == 1
    ours = augment.apply_op(images, op, negative)
    for i in range(32):
        name = OPS[int(op[i])]
        mag = tv_magnitude(name, 9, bool(negative[i]), 28, 28)
        theirs = tv_op(images[i], name, mag)
        assert close(ours[i:i + 1], theirs[None], name in GEOMETRIC), (i, name)


def test_non_square_images_match_torchvision(real):
    """Translate is relative to each axis (150/331 of W for X, of H for Y) and the geometry
    is right off the square."""
    images = F.interpolate(_batch(real, "rgb").float(), size=(40, 52), mode="bilinear")
    images = images.round().to(torch.uint8)
    augment = BatchedRandAugment(num_ops=1, magnitude=20)
    for name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Sharpness"):
        for negative in (False, True):
            mag = tv_magnitude(name, 20, negative, 40, 52)
            theirs = per_image(lambda im, mag=mag, name=name: tv_op(im, name, mag), images)
            assert close(augment.apply_op(images, name, negative), theirs,
                         name in GEOMETRIC), (name, negative)


@pytest.mark.parametrize("size", [2, 3, 8])
def test_edge_cases_match_torchvision(size):
    """Constant channels (AutoContrast leaves them, Equalize's step is 0), two-valued and
    saturated images, and images too small for the sharpness kernel (torchvision returns
    them unchanged); on 2x2 and 3x3 images the tolerance allows no pixel off."""
    torch.manual_seed(5)
    images = torch.stack([
        torch.zeros(3, size, size), torch.full((3, size, size), 255.0),
        torch.full((3, size, size), 77.0),
        torch.randint(0, 2, (3, size, size)) * 200.0,
        torch.randint(0, 256, (3, size, size)).float(),
        torch.stack([torch.full((size, size), 9.0), torch.randint(0, 256, (size, size)),
                     torch.full((size, size), 250.0)]),
    ]).to(torch.uint8)
    for magnitude in (9, 30):
        augment = BatchedRandAugment(num_ops=1, magnitude=magnitude)
        for k, name in enumerate(OPS):
            for negative in (False, True):
                mag = tv_magnitude(name, magnitude, negative, size, size)
                theirs = per_image(lambda im, mag=mag, name=name: tv_op(im, name, mag), images)
                assert close(augment.apply_op(images, k, negative), theirs, name in GEOMETRIC), \
                    (size, magnitude, name, negative)


def test_forward_replays_with_torchvision(real):
    """A whole random forward (2 ops per image) equals torchvision replaying, image by image,
    the ops and signs the call reports in last_ops / last_negative."""
    torch.manual_seed(3)
    images = torch.cat([_batch(real, "rgb"), _batch(real, "rgb_low")])
    augment = BatchedRandAugment(num_ops=2, magnitude=9)
    out = augment(images)
    assert augment.last_ops.shape == augment.last_negative.shape == (2, 64)
    assert len(set(augment.last_ops[0].tolist())) > 8  # the batch really mixes ops
    for i in range(64):
        expected = images[i]
        for slot in range(2):
            name = OPS[int(augment.last_ops[slot, i])]
            mag = tv_magnitude(name, 9, bool(augment.last_negative[slot, i]), 28, 28)
            expected = tv_op(expected, name, mag)
        geometric = any(OPS[int(k)] in GEOMETRIC for k in augment.last_ops[:, i])
        assert close(out[i:i + 1], expected[None], geometric), i


# --------------------------------------------------------------------------- independence


def _chi_square_bound(dof: int) -> float:
    """Mean + 5 standard deviations of a chi-square with dof degrees of freedom."""
    return dof + 5 * math.sqrt(2 * dof)


def test_ops_are_drawn_independently_per_image(real):
    torch.manual_seed(0)
    n = 4096
    images = real[:1].expand(n, -1, -1, -1).contiguous()
    augment = BatchedRandAugment(num_ops=2, magnitude=9)
    out = augment(images)
    ops, negative = augment.last_ops, augment.last_negative
    k = len(OPS)
    for slot in range(2):
        counts = torch.bincount(ops[slot], minlength=k).double()
        expected = n / k
        sd = math.sqrt(n * (1 / k) * (1 - 1 / k))
        assert ((counts - expected).abs() < 5 * sd).all(), counts
        assert ((counts - expected) ** 2 / expected).sum() < _chi_square_bound(k - 1)
        assert abs(negative[slot].sum().item() - n / 2) < 5 * math.sqrt(n / 4)

    def independence_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
        table = torch.bincount(a * k + b, minlength=k * k).double().view(k, k)
        expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / n
        return ((table - expected) ** 2 / expected).sum().item()

    bound = _chi_square_bound((k - 1) ** 2)
    assert independence_statistic(ops[0], ops[1]) < bound
    assert independence_statistic(ops[0], ops[0]) > bound  # the check can fail
    # the sign is independent of the op too
    sign_table = torch.bincount(ops[0] * 2 + negative[0].long(), minlength=2 * k).view(k, 2)
    assert ((sign_table[:, 1] - sign_table[:, 0]).abs().double()
            < 5 * torch.sqrt(sign_table.sum(1).double())).all()
    # one image, many different results in one batch
    distinct = torch.unique(out.flatten(1), dim=0).shape[0]
    assert distinct > 150, distinct


def test_seed_reproducible(real):
    images = _batch(real, "rgb")
    noise = BatchedNoise(num_ops=2, magnitude=9, cutout_size=8)
    torch.manual_seed(11)
    a = noise(images)
    torch.manual_seed(11)
    b = noise(images)
    torch.manual_seed(12)
    c = noise(images)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a != c).flatten(1).any(1).float().mean() > 0.5


# --------------------------------------------------------------------------- crop and flip


def _coordinate_images(n: int, size: int = 32) -> torch.Tensor:
    """(n, 3, size, size): channel 0 = row + 1, channel 1 = column + 1, channel 2 random in
    1..255, so every output pixel tells where it came from and padding (0) stands out."""
    rows = torch.arange(1, size + 1).view(size, 1).expand(size, size)
    cols = torch.arange(1, size + 1).view(1, size).expand(size, size)
    noise = torch.randint(1, 256, (size, size))
    image = torch.stack([rows, cols, noise]).to(torch.uint8)
    return image.expand(n, -1, -1, -1).contiguous()


def _pad(images: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    if mode == "constant":
        return F.pad(images, (pad,) * 4)
    return F.pad(images.float(), (pad,) * 4, mode=mode).to(torch.uint8)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_crop_flip_is_a_window_of_the_padded_image(mode):
    torch.manual_seed(1)
    n, size = 2000, 32
    images = _coordinate_images(n, size)
    out = crop_flip(images, padding_mode=mode)
    pad = 4  # 1/8 of 32
    # The centre pixel is never padding: it names the source row and column.
    c = size // 2
    src_row = out[:, 0, c, c].long() - 1
    src_col = out[:, 1, c, c].long() - 1
    flipped = out[:, 1, c, c + 1].long() < out[:, 1, c, c].long()
    dy = src_row - c + pad
    dx = torch.where(flipped, src_col - (size - 1 - c) + pad, src_col - c + pad)
    padded = _pad(images, pad, mode)
    for i in range(n):
        y, x = int(dy[i]), int(dx[i])
        window = padded[i, :, y:y + size, x:x + size]
        expected = window.flip(-1) if bool(flipped[i]) else window
        assert torch.equal(out[i], expected), i
    assert sorted(set(dy.tolist())) == list(range(2 * pad + 1))
    assert sorted(set(dx.tolist())) == list(range(2 * pad + 1))
    for offsets in (dy, dx):
        counts = torch.bincount(offsets, minlength=2 * pad + 1).double()
        p = 1 / (2 * pad + 1)
        assert ((counts - n * p).abs() < 5 * math.sqrt(n * p * (1 - p))).all(), counts
    assert abs(flipped.sum().item() - n / 2) < 5 * math.sqrt(n / 4)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_translate_flip_matches_padding(real, mode):
    images = _batch(real, "rgb")
    pad = 5
    dy = torch.randint(0, 2 * pad + 1, (32,))
    dx = torch.randint(0, 2 * pad + 1, (32,))
    flips = torch.rand(32) < 0.5
    out = translate_flip(images, dy, dx, flips, pad, padding_mode=mode)
    padded = _pad(images, pad, mode)
    for i in range(32):
        window = padded[i, :, int(dy[i]):int(dy[i]) + 28, int(dx[i]):int(dx[i]) + 28]
        assert torch.equal(out[i], window.flip(-1) if bool(flips[i]) else window), i


def test_crop_flip_only_flips_images_too_small_to_pad():
    """round(4 / 8) = 0: a 4 px image is not translated, only flipped (about half of them)."""
    torch.manual_seed(6)
    images = torch.randint(1, 256, (64, 1, 4, 4), dtype=torch.uint8)
    out = crop_flip(images)
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert (same ^ mirrored).all()
    assert same.any() and mirrored.any()


def test_translate_flip_reflect_needs_small_pad():
    zeros = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError):
        translate_flip(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), zeros, zeros,
                       zeros.bool(), pad=4, padding_mode="reflect")
    with pytest.raises(ValueError):
        crop_flip(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), padding_mode="replicate")


# --------------------------------------------------------------------------- cutout


def test_cutout_one_clipped_square_per_image():
    torch.manual_seed(2)
    n, size, side = 2000, 32, 10
    images = torch.full((n, 3, size, size), 200, dtype=torch.uint8)
    out = cutout(images, side)
    masked = (out == 0).all(1)  # (n, H, W)
    assert ((out == 0) | (out == 200)).all() and ((out == 0).any(1) == masked).all()
    rows, cols = masked.any(2), masked.any(1)
    assert torch.equal(masked, rows[:, :, None] & cols[:, None, :])  # a rectangle
    heights, widths = rows.sum(1), cols.sum(1)
    index = torch.arange(size)
    for extent, line in ((heights, rows), (widths, cols)):
        first = torch.where(line, index, size).amin(1)
        last = torch.where(line, index, -1).amax(1)
        assert (extent >= 1).all() and (extent <= side).all()
        assert torch.equal(last - first + 1, extent)  # contiguous
        inside = (first > 0) & (last < size - 1)
        assert (extent[inside] == side).all()  # full size unless clipped at a border
        assert (extent < side).any()  # and clipping happens
    tops = torch.where(rows, index, size).amin(1)
    lefts = torch.where(cols, index, size).amin(1)
    assert torch.unique(tops * size + lefts).numel() > 400  # positions vary


def test_cutout_at_real_images(real):
    images = _batch(real, "rgb_low")  # no zeros: every cut-out pixel stands out
    cy = torch.randint(0, 28, (32,))
    cx = torch.randint(0, 28, (32,))
    for side in (9, 8):
        out = cutout_at(images, cy, cx, side)
        expected = images.clone()
        for i in range(32):
            top, left = int(cy[i]) - side // 2, int(cx[i]) - side // 2
            expected[i, :, max(top, 0):top + side, max(left, 0):left + side] = 0
        assert torch.equal(out, expected)
        assert not torch.equal(out, images)
    assert torch.equal(cutout(images, 0), images)


# --------------------------------------------------------------------------- from a config


def test_make_augment_builds_the_noise_a_config_asks_for():
    config = StudentConfig(pseudo_labels="x", augment="randaugment", randaugment_ops=3,
                           randaugment_magnitude=15, cutout=8, padding="reflect")
    noise = make_augment(config)
    assert repr(noise) == ("BatchedNoise(BatchedRandAugment(num_ops=3, magnitude=15), "
                           "cutout_size=8, padding_mode='reflect')")
    torch.manual_seed(8)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    light = make_augment(StudentConfig(pseudo_labels="x", augment="light", padding="reflect"))
    torch.manual_seed(9)
    out = light(images)
    torch.manual_seed(9)
    assert torch.equal(out, crop_flip(images, padding_mode="reflect"))
    assert make_augment(StudentConfig(pseudo_labels="x", augment="none")) is no_augment


# --------------------------------------------------------------------------- shapes, dtypes


MAKERS = {
    "crop_flip": lambda: crop_flip,
    "crop_flip_reflect": lambda: (lambda x: crop_flip(x, padding_mode="reflect")),
    "cutout": lambda: (lambda x: cutout(x, 6)),
    "randaugment": lambda: BatchedRandAugment(2, 9),
    "randaugment_3_30": lambda: BatchedRandAugment(3, 30),
    "noise": lambda: BatchedNoise(2, 9, cutout_size=8),
    "noise_reflect": lambda: BatchedNoise(2, 9, padding_mode="reflect"),
}


@pytest.mark.parametrize("maker", sorted(MAKERS))
@pytest.mark.parametrize("shape", [(1, 1, 28, 28), (5, 3, 28, 28), (4, 3, 32, 40), (1, 3, 64, 64)])
def test_shape_and_dtype_preserved(maker, shape):
    torch.manual_seed(4)
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    before = images.clone()
    out = MAKERS[maker]()(images)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert out.device == images.device
    assert torch.equal(images, before)  # the input is not modified


def test_rejects_what_it_cannot_do():
    augment = BatchedRandAugment()
    with pytest.raises(TypeError):
        augment(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError):
        augment(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError):
        BatchedRandAugment(magnitude=31)
    with pytest.raises(ValueError):
        BatchedNoise(padding_mode="circular")
    zero = BatchedRandAugment(num_ops=0)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(zero(images), images) and zero.last_ops.shape == (0, 3)


# --------------------------------------------------------------------------- no host syncs


class _SyncRecorder(TorchDispatchMode):
    """Records every aten op that makes the host wait for the device's data: reading a scalar
    (.item(), float(t), bool(t), ``if t:``), data-dependent shapes (nonzero, boolean-mask
    indexing, masked_select, unique, bincount)."""

    SYNCING = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "nonzero_static",
               "masked_select", "bincount", "_unique", "_unique2", "unique_dim",
               "unique_consecutive", "equal", "allclose", "tolist"}

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.SYNCING:
            self.syncs.append(name)
        if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
            indices = args[1] if len(args) > 1 else []
            if any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices):
                self.syncs.append(name + " with a boolean mask")
        return func(*args, **(kwargs or {}))


def test_no_host_device_sync_in_a_call(real):
    """CPU has no torch.cuda.set_sync_debug_mode, so intercept the aten ops of a whole call
    (after the first call of a size, which builds the lookup tables) instead."""
    images = _batch(real, "rgb")
    noise = BatchedNoise(num_ops=2, magnitude=9, cutout_size=8, padding_mode="reflect")
    light = make_augment(StudentConfig(pseudo_labels="x", augment="light"))
    noise(images)
    noise(images[:, :1])
    with _SyncRecorder() as recorder:
        noise(images)
        noise(images[:1])  # B = 1 (new tables only where the size changes: C, H, W)
        noise(images[:, :1])
        light(images)
    assert recorder.syncs == []
    with _SyncRecorder() as recorder:  # the recorder does see a sync when there is one
        _ = images[images > 3]
        float(images.float().mean())
    assert recorder.syncs

