"""Shifted views at test time: a finished run's model on its test set with no TTA, with the
flip (the small students' ``flip_tta``), and with the flip's probabilities averaged half and
half with those of the image and its mirror each moved one pixel (reflect padding) two ways
(diagonally) or four ways (left, right, up, down), as airbench's second TTA level does.

    python benchmarks/shift_tta.py RUN [RUN ...]

Prints each run's test top-1 (%) per variant. The model's own ``flip_tta`` is switched off
and done here instead, so every variant shares its forward passes.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from noisystudent.models.saved import load_trained
from noisystudent.models.transforms import to_model_input
from noisystudent.reports.evaluate import test_set_of

DIAGONAL = ((-1, -1), (1, 1))
FOUR_WAYS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``x`` moved by (dx, dy) pixels, its edge reflected in."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def probabilities(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x).float().softmax(-1)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    device = torch.device("cpu")
    for run in args.runs:
        trained = load_trained(run, device)
        model = trained.model
        model.flip_tta = False
        test_set = test_set_of(trained)
        labels = torch.as_tensor(test_set.labels)
        probs: dict[str, list[torch.Tensor]] = {"plain": [], "flip": [], "flip+shift2": [],
                                                "flip+shift4": []}
        for start in range(0, len(test_set), 1000):
            x = to_model_input(torch.as_tensor(test_set.images[start:start + 1000]),
                               trained.spec)
            views = (x, x.flip(-1))
            plain, mirrored = (probabilities(model, v) for v in views)
            flip = (plain + mirrored) / 2
            two = sum(probabilities(model, shifted(v, *d)) for v in views for d in DIAGONAL) / 4
            four = sum(probabilities(model, shifted(v, *d)) for v in views for d in FOUR_WAYS) / 8
            for name, p in (("plain", plain), ("flip", flip), ("flip+shift2", (flip + two) / 2),
                            ("flip+shift4", (flip + four) / 2)):
                probs[name].append(p)
        print(run, {name: round(100 * (torch.cat(p).argmax(1) == labels).float().mean().item(), 2)
                    for name, p in probs.items()}, flush=True)


if __name__ == "__main__":
    main()
