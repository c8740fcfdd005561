"""How the keep rule decides on validation sets of every size, on real runs: does it keep a
later step that is better on test (the gain kept), and does it refuse one that is worse (a
regression caught)?

    python benchmarks/keep_rule.py RUN [RUN ...] [--sizes 20 41 100 300 1000] [--draws 2000]

Each step of each finished self-train RUN is evaluated once on the whole test set, image by
image (cached in runs/bench/). A validation set of N images is then drawn from those test
images, many times; on each draw the rule compares two steps as a run would (the paired sign
test of noisystudent/core/keep.py), beside the older rule (the better top-1 on validation, a tie to
the later step). Every pair of steps is compared in its real order (the later step better on
test: the rule should keep it) and reversed, as a forced regression (the later step worse on
test by the same margin: the rule should refuse it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, write_section  # noqa: E402

from noisystudent.core import keep, runs  # noqa: E402
from noisystudent.core.layout import SelfTrainLayout  # noqa: E402
from noisystudent.data.loaders import ImageBatches  # noqa: E402
from noisystudent.models.inference import predict_logits  # noqa: E402
from noisystudent.models.saved import load_trained  # noqa: E402
from noisystudent.models.transforms import CleanPipeline  # noqa: E402
from noisystudent.reports.evaluate import test_set_of  # noqa: E402

HEADER = ("| run | earlier -> later (test top-1) | on test | validation images "
          "| the rule keeps the later | the better-on-validation rule keeps it |")


def steps_of(run: Path) -> list[tuple[str, Path]]:
    """(role, step directory) of a finished self-train run, in order."""
    layout = SelfTrainLayout(run, None)
    iterations = runs.read_yaml(run / runs.CONFIG)["iterations"]
    steps = [("teacher", layout.teacher)]
    steps += [(f"student {k}", layout.student(k)) for k in range(1, iterations + 1)
              if (layout.student(k) / runs.MODEL).is_file()]
    return steps


def correct_on_test(step: Path) -> np.ndarray:
    """Which test images the step's model gets right, cached beside the other bench runs."""
    cache = WORK / "keep-rule" / (str(step.resolve()).strip("/").replace("/", "_") + ".npy")
    if cache.is_file():
        return np.load(cache)
    device = torch.device("cpu")
    trained = load_trained(step, device)
    test_set = test_set_of(trained)
    loader = ImageBatches(test_set.images, test_set.labels, 256, device)
    logits = predict_logits(trained.model, CleanPipeline(trained.spec), loader, device=device,
                            dtype=None)
    correct = (logits.argmax(1) == torch.as_tensor(test_set.labels)).numpy()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, correct)
    return correct


def kept_rates(earlier: np.ndarray, later: np.ndarray, size: int, draws: int,
               rng: np.random.Generator) -> tuple[float, float]:
    """Over ``draws`` validation sets of ``size`` images: how often the sign test keeps the
    later step, and how often the better-on-validation rule does."""
    by_test, by_top1 = 0, 0
    for _ in range(draws):
        pick = rng.choice(len(earlier), size, replace=False)
        rows = [{"role": role, "val_correct": keep.correct_string(right[pick]),
                 "val_top1": right[pick].mean()}
                for role, right in (("earlier", earlier), ("later", later))]
        by_test += keep.compare(*rows).later_kept
        by_top1 += keep.best_on_validation(rows) == 1  # no loss here: a tie to the later
    return by_test / draws, by_top1 / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 41, 100, 300, 1000])
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for run in args.runs:
        steps = [(role, correct_on_test(path)) for role, path in steps_of(run)]
        pairs = [(steps[i], steps[j]) for i in range(len(steps))
                 for j in range(i + 1, len(steps))]
        for first, second in pairs:
            for earlier, later in ((first, second), (second, first)):
                (earlier_role, earlier_right), (later_role, later_right) = earlier, later
                gap = 100 * (later_right.mean() - earlier_right.mean())
                what = "better" if gap > 0 else "worse (forced)"
                for size in [n for n in args.sizes if n < len(earlier_right)]:
                    rule, top1 = kept_rates(earlier_right, later_right, size, args.draws, rng)
                    rows.append(f"| {run.name} | {earlier_role} -> {later_role} "
                                f"({100 * earlier_right.mean():.2f} -> "
                                f"{100 * later_right.mean():.2f}%) | {what} by {abs(gap):.2f} "
                                f"| {size} | {100 * rule:.1f}% | {100 * top1:.1f}% |")
                print(rows[-1], flush=True)
    body = f"""Every step of each run evaluated on all {len(steps[0][1]):,} test images; validation
sets of N images drawn from them {args.draws:,} times (seed 0). "Keeps the later" is the share
of draws where the rule keeps the later step: high is right where the later step is better on
test, low is right where it is worse (the pair reversed: a forced regression).

{HEADER}
| --- | --- | --- | ---: | ---: | ---: |
""" + "\n".join(rows)
    write_section("keep-rule", "The keep rule on small validation sets", body, seeds="0")


if __name__ == "__main__":
    main()
