"""RandAugment drawn per image on a whole uint8 batch: ``BatchedRandAugment`` follows
torchvision's ``v2.RandAugment`` (same 14 ops, magnitudes of ``RandAugment._AUGMENTATION_SPACE``,
same arithmetic as ``v2.functional``) with every image drawing its own ops and signs; see its
docstring for the few places where it can differ from torchvision.

Each op kind is computed for the whole batch and every image keeps the result of its own op
(one gather from the stack of results, or an exact select by a 0/1 mask). The per-(op, sign)
parameters (sampling grids of the geometric ops, blend factors) are looked up in small tables
(``_Tables``), built here once per image size and device, so the random draws stay on the
device and nothing waits for it.

Fixed, not settings (no config reaches them): torchvision's defaults of 31 magnitude bins (the
config's ``randaugment_magnitude`` is on its 0-30 scale), nearest-neighbour sampling and a zero
fill for what the geometric ops bring in from outside the image. The official Noisy Student
RandAugment also has a Cutout op; here Cutout is its own step after RandAugment (``cutout.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batch import check_batch

OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
    "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize",
    "AutoContrast", "Equalize",
)
SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
                    "Brightness", "Color", "Contrast", "Sharpness"})
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
BLEND = ("Brightness", "Color", "Contrast", "Sharpness")
# The results a RandAugment slot computes for the whole batch; each op takes one of them.
KINDS = ("identity", "geometric", "blend", "Posterize", "Solarize", "AutoContrast", "Equalize")
NUM_BINS = 31  # torchvision's num_magnitude_bins


def _magnitudes(magnitude: int, height: int, width: int) -> dict[str, float]:
    """The magnitude of every op, as ``float(magnitudes[magnitude])`` of torchvision's
    ``RandAugment._AUGMENTATION_SPACE`` (float32 linspace values, as there)."""

    def lin(start: float, end: float) -> float:
        return float(torch.linspace(start, end, NUM_BINS)[magnitude])

    posterize = (8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / 4))).round().int()
    return {
        "Identity": 0.0,
        "ShearX": lin(0.0, 0.3),
        "ShearY": lin(0.0, 0.3),
        "TranslateX": lin(0.0, 150.0 / 331.0 * width),
        "TranslateY": lin(0.0, 150.0 / 331.0 * height),
        "Rotate": lin(0.0, 30.0),
        "Brightness": lin(0.0, 0.9),
        "Color": lin(0.0, 0.9),
        "Contrast": lin(0.0, 0.9),
        "Sharpness": lin(0.0, 0.9),
        "Posterize": float(int(posterize[magnitude])),
        "Solarize": lin(1.0, 0.0),
        "AutoContrast": 0.0,
        "Equalize": 0.0,
    }


def _inverse_affine(center: list[float], angle: float, translate: list[float],
                    shear: list[float]) -> list[float]:
    """torchvision's ``_get_inverse_affine_matrix`` with scale 1 (output -> input pixel map,
    coordinates relative to the image centre)."""
    rot = math.radians(angle)
    sx = math.radians(shear[0])
    sy = math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    cos_sy = math.cos(sy)
    tan_sx = math.tan(sx)
    a = math.cos(rot - sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot - sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    matrix = [d, -b, 0.0, -c, a, 0.0]
    matrix[2] += cx - matrix[0] * (cx + tx) - matrix[1] * (cy + ty)
    matrix[5] += cy - matrix[3] * (cx + tx) - matrix[4] * (cy + ty)
    return matrix


def _geometric_matrix(op: str, magnitude: float, height: int, width: int) -> list[float]:
    """The inverse affine matrix torchvision's RandAugment uses for a geometric op with a
    signed magnitude (see ``_AutoAugmentBase._apply_image_or_video_transform``)."""
    corner = [-width * 0.5, -height * 0.5]  # center=[0, 0] in pixels, relative to the centre
    if op == "ShearX":
        return _inverse_affine(corner, 0.0, [0.0, 0.0],
                               [math.degrees(math.atan(magnitude)), 0.0])
    if op == "ShearY":
        return _inverse_affine(corner, 0.0, [0.0, 0.0],
                               [0.0, math.degrees(math.atan(magnitude))])
    if op == "TranslateX":
        return _inverse_affine([0.0, 0.0], 0.0, [float(int(magnitude)), 0.0], [0.0, 0.0])
    if op == "TranslateY":
        return _inverse_affine([0.0, 0.0], 0.0, [0.0, float(int(magnitude))], [0.0, 0.0])
    if op == "Rotate":
        # F.rotate: angle % 360, then the affine matrix of -angle about the centre.
        return _inverse_affine([0.0, 0.0], -(magnitude % 360), [0.0, 0.0], [0.0, 0.0])
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _affine_grid(matrix: list[float], height: int, width: int) -> torch.Tensor:
    """(H, W, 2) sampling grid of one matrix, computed as torchvision's ``_affine_grid``."""
    theta = torch.tensor(matrix, dtype=torch.float32).reshape(1, 2, 3)
    base = torch.empty(1, height, width, 3)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width))
    base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5,
                                      steps=height).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * width, 0.5 * height]))
    return base.view(1, height * width, 3).bmm(scaled).view(height, width, 2)


def _kind(op: str) -> int:
    if op in GEOMETRIC:
        return KINDS.index("geometric")
    if op in BLEND:
        return KINDS.index("blend")
    return KINDS.index(op) if op in KINDS else KINDS.index("identity")


@dataclass
class _Tables:
    """Per (op, sign) lookups for one image size on one device; row = 2 * op + negative."""

    grids: torch.Tensor  # (2K, H, W, 2) float32 sampling grids (identity for non-geometric ops)
    scale: torch.Tensor  # (2K,) float32 ratio 1 + magnitude of the blends (1 for Sharpness)
    alpha: torch.Tensor  # (2K,) float32 1 - ratio, rounded from double as torchvision's alpha
    kind: torch.Tensor  # (K,) long: the index in KINDS of each op's result
    posterize_bits: int
    solarize_threshold: float  # 255 * magnitude, compared as torchvision does (in float32)


class BatchedRandAugment:
    """torchvision ``v2.RandAugment(num_ops, magnitude)`` with the ops drawn independently per
    image, on a whole uint8 (B, C, H, W) batch.

    For each of the ``num_ops`` slots every image draws its own op uniformly among the 14 of
    torchvision (``OPS``) and its own sign (negative with probability 0.5; used by the signed
    ops). The drawn ops and signs of the last call are kept in ``last_ops`` and
    ``last_negative`` ((num_ops, B) tensors on the batch's device). ``apply_op(images, op,
    negative)`` applies one given op per image (for tests and replay).

    Geometric ops are one ``grid_sample`` per slot with per-image grids, computed exactly as
    torchvision's ``affine``/``rotate`` (ShearX/ShearY about the top-left corner, shear angle
    degrees(atan(magnitude)); Rotate about the centre; Translate by int(magnitude) pixels,
    150/331 of the image size at the top bin). Colour ops use per-image factors with
    torchvision's arithmetic. Known differences from torchvision: the blends use per-image
    factor tensors (``addcmul``) where torchvision adds with a scalar ``alpha``; both round once
    (fused multiply-add) on the CPU this was tested on and agree bit for bit there, but on
    another device or build a pixel could rarely come out one level apart. The random stream
    is not torchvision's (a sign is drawn for every image and slot), so a seed does not give
    torchvision's choices.
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9):
        if not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops must be a non-negative int, got {num_ops!r}")
        if not 0 <= magnitude < NUM_BINS:
            raise ValueError(f"magnitude must be in [0, {NUM_BINS}), got {magnitude}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.last_ops: torch.Tensor | None = None
        self.last_negative: torch.Tensor | None = None
        self._tables: dict[tuple, _Tables] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_ops={self.num_ops}, magnitude={self.magnitude})"

    def _tables_for(self, height: int, width: int, device: torch.device) -> _Tables:
        key = (height, width, str(device))
        tables = self._tables.get(key)
        if tables is None:
            mags = _magnitudes(self.magnitude, height, width)
            grids, scale, alpha = [], [], []
            for op in OPS:
                for negative in (False, True):
                    m = -mags[op] if negative and op in SIGNED else mags[op]
                    grids.append(_affine_grid(_geometric_matrix(op, m, height, width),
                                              height, width))
                    ratio = 1.0 + m if op in BLEND else 1.0
                    scale.append(1.0 if op == "Sharpness" else ratio)
                    alpha.append(1.0 - ratio)
            tables = _Tables(
                grids=torch.stack(grids).to(device),
                scale=torch.tensor(scale, dtype=torch.float32).to(device),
                alpha=torch.tensor(alpha, dtype=torch.float32).to(device),
                kind=torch.tensor([_kind(op) for op in OPS]).to(device),
                posterize_bits=int(mags["Posterize"]),
                solarize_threshold=255 * mags["Solarize"],
            )
            self._tables[key] = tables
        return tables

    # ------------------------------------------------------------------ application

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_batch(images)
        b = images.shape[0]
        device = images.device
        ops, negatives = [], []
        out = images
        for _ in range(self.num_ops):
            op = torch.randint(0, len(OPS), (b,), device=device)
            negative = torch.rand(b, device=device) <= 0.5
            out = self.apply_op(out, op, negative)
            ops.append(op)
            negatives.append(negative)
        if self.num_ops == 0:
            out = images.clone()
        self.last_ops = (torch.stack(ops) if ops
                         else torch.zeros(0, b, dtype=torch.long, device=device))
        self.last_negative = (torch.stack(negatives) if negatives
                              else torch.zeros(0, b, dtype=torch.bool, device=device))
        return out

    def apply_op(self, images: torch.Tensor, op: int | str | torch.Tensor,
                 negative: bool | torch.Tensor = False) -> torch.Tensor:
        """Apply one RandAugment op per image: ``op`` is an index into ``OPS`` or its name
        (the same for the whole batch) or a (B,) tensor of indices; ``negative`` a bool or a
        (B,) bool tensor (the sign of signed ops). Returns a new uint8 batch."""
        check_batch(images)
        b, c, h, w = images.shape
        device = images.device
        if isinstance(op, str):
            op = OPS.index(op)
        if not isinstance(op, torch.Tensor):
            if not 0 <= op < len(OPS):
                raise ValueError(f"op index {op} out of range for {len(OPS)} ops")
            op = torch.full((b,), op, dtype=torch.long, device=device)
        if not isinstance(negative, torch.Tensor):
            negative = torch.full((b,), bool(negative), dtype=torch.bool, device=device)
        op = op.to(device=device, dtype=torch.long)
        negative = negative.to(device=device, dtype=torch.bool)
        tables = self._tables_for(h, w, device)
        row = 2 * op + negative.long()

        # Every op kind is computed for the whole batch, in the order of KINDS, and each image
        # takes the result of its own kind: one gather from the stack.
        x = images
        xf = images.float()
        results = [x, _geometric(xf, tables.grids[row]), _blend(xf, op, row, tables)]
        bits = tables.posterize_bits
        results.append(x & (((1 << bits) - 1) << (8 - bits)) if bits < 8 else x)
        # As torchvision: uint8 >= python float (compared in float32), then 255 - x (= x ^ 255).
        results.append(x ^ (x >= tables.solarize_threshold).to(torch.uint8).mul_(255))
        results.append(_autocontrast(xf))
        results.append(_equalize(x))
        kind = tables.kind[op]
        if c == 1:  # Color is the identity on one channel, as in torchvision
            kind = kind * (op != OPS.index("Color"))
        return torch.stack(results)[kind, torch.arange(b, device=device)]


def _geometric(xf: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """One nearest-neighbour grid_sample of the batch with per-image grids; what comes from
    outside the image is zero (torchvision's default fill)."""
    sampled = F.grid_sample(xf, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return sampled.round_().to(torch.uint8)


def _blend(xf: torch.Tensor, op: torch.Tensor, row: torch.Tensor,
           tables: _Tables) -> torch.Tensor:
    """Brightness, Color, Contrast and Sharpness, each image with its own factor:
    clamp(x * ratio + degenerate * (1 - ratio)) with the degenerate image of its op
    (black, grayscale, grayscale mean, 3x3 smoothed with the border kept)."""
    b, c, h, w = xf.shape

    def chosen(name: str) -> torch.Tensor:
        return (op == OPS.index(name)).view(b, 1, 1, 1).float()

    if c == 3:
        r, g, bl = xf.unbind(dim=1)
        gray = r.mul(0.2989).add_(g, alpha=0.587).add_(bl, alpha=0.114)
        gray = gray.unsqueeze(1).floor_()
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
    else:
        gray = None  # Color is the identity on one channel; never selected then
        mean = xf.mean(dim=(-3, -2, -1), keepdim=True)
    if h > 2 and w > 2:
        blurred = xf.clone()
        blurred[..., 1:-1, 1:-1] = _smooth(xf)
    else:
        blurred = xf  # torchvision returns such tiny images unchanged
    # The degenerate image of each image's op (0 for Brightness); the masks are 0 or 1 and
    # exclusive, so the sum adds exact zeros.
    sharpness = chosen("Sharpness")
    degenerate = mean * chosen("Contrast") + blurred * sharpness
    if gray is not None:
        degenerate = degenerate + gray * chosen("Color")
    # torchvision's _blend: image * ratio + degenerate * (1 - ratio); its sharpness:
    # image + (1 - ratio) * (blurred - image), which keeps the border pixels exact. Both
    # add with a scalar alpha, which the CPU kernel fuses (one rounding, as addcmul). One
    # addcmul does both: ``scale`` is 1 for Sharpness, ``ratio`` for the others.
    scale = tables.scale[row].view(b, 1, 1, 1)
    alpha = tables.alpha[row].view(b, 1, 1, 1)
    blended = torch.addcmul(xf * scale, degenerate - xf * sharpness, alpha)
    return blended.clamp_(0, 255).to(torch.uint8)


def _smooth(xf: torch.Tensor) -> torch.Tensor:
    """torchvision's sharpness kernel (1 around, 5 in the middle, over 13) on the interior,
    rounded: (B, C, H-2, W-2). Summed from shifted slices: the sum of integers is exact in
    float32 and N/13 is never within 1/26 of a half, so the rounded result equals the rounded
    convolution torchvision does, and a depthwise conv2d is much slower on CPU."""
    h, w = xf.shape[-2:]
    total = xf[..., 1:-1, 1:-1] * 5
    for dy in range(3):
        for dx in range(3):
            if (dy, dx) != (1, 1):
                total += xf[..., dy:dy + h - 2, dx:dx + w - 2]
    return total.div_(13).round_()


def _autocontrast(xf: torch.Tensor) -> torch.Tensor:
    """torchvision's autocontrast on a float copy of a uint8 batch: per image and channel,
    stretch [min, max] to [0, 255]; constant channels are left as they are."""
    minimum = xf.amin(dim=(-2, -1), keepdim=True)
    maximum = xf.amax(dim=(-2, -1), keepdim=True)
    flat = maximum == minimum
    inv_scale = torch.where(flat, 1.0, (maximum - minimum).mul_(1.0 / 255))
    minimum = torch.where(flat, 0.0, minimum)
    return (xf - minimum).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` where ``mask`` (broadcastable bool) else ``b``, exactly: on uint8 b + (a - b) * m
    wraps around to a or b. Several times faster than ``torch.where``, which is not vectorised
    on CPU."""
    return b + (a - b) * mask.to(a.dtype)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """torchvision's histogram equalisation (PIL's LUT scheme), per image and channel: the
    histograms of all (image, channel) rows are filled by one scatter_add."""
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, dtype=torch.int32, device=x.device)
    hist.scatter_add_(1, flat, hist.new_ones(1, 1).expand_as(flat))
    cum_hist = hist.cumsum(dim=1)
    # torchvision takes the argmax of cum_hist: the first bin where it is full, which is the
    # largest value present, i.e. the max of the pixels (cheaper on uint8).
    last = x.reshape(b * c, h * w).amax(dim=1, keepdim=True).long()
    step = (h * w - hist.gather(1, last)).div(255, rounding_mode="floor")
    lut = ((cum_hist[:, :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor")
           .clamp_(0, 255).to(torch.uint8))
    lut = torch.cat([lut.new_zeros(b * c, 1), lut], dim=1)
    equalized = lut.gather(1, flat).view(b, c, h, w)
    return _select((step != 0).view(b, c, 1, 1), equalized, x)
