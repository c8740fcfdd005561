"""Which step a self-training run keeps: the later one, as Noisy Student expects, unless the
validation images show it worse beyond chance.

Two steps are compared on the same validation images, image by image: only the images one
of them gets right and the other wrong tell them apart. Under "the later step is no worse"
each such image is as likely to favour either, so the chance that the earlier one wins at
least as many of them as it did is a binomial tail (an exact sign test, McNemar's test for
paired counts). One image of 41 is 2.4 points of top-1, which two percentages cannot weigh.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# The one-sided significance below which a later step counts as worse than the kept one.
SIGNIFICANCE = 0.05
EXACT_UP_TO = 1_000  # discordant images counted exactly; beyond, the normal approximation


def correct_string(correct) -> str:
    """The images a model got right as '1'/'0', in the validation split's order (what
    metrics.json stores, so that a run can pair two steps on the same images)."""
    return "".join("1" if c else "0" for c in correct)


def worse_by_chance(only_earlier: int, only_later: int) -> float:
    """P(the earlier step alone right on at least ``only_earlier`` of the images that tell
    the two apart | each such image a fair coin): the one-sided exact sign test's p-value."""
    n = only_earlier + only_later
    if n > EXACT_UP_TO:  # the normal approximation, with continuity correction
        return 0.5 * math.erfc((only_earlier - 0.5 - n / 2) / math.sqrt(n / 4) / math.sqrt(2))
    return sum(math.comb(n, i) for i in range(only_earlier, n + 1)) / 2 ** n


def fewest_telling(significance: float = SIGNIFICANCE) -> int:
    """The fewest images that can show a later step worse beyond chance: the earlier step
    alone right on all of them (5 at 0.05)."""
    return next(n for n in range(1, 64) if worse_by_chance(n, 0) < significance)


@dataclass(frozen=True)
class Comparison:
    """A later step against the kept earlier one, on the same validation images."""

    earlier: str          # roles, as the report names them
    later: str
    images: int
    earlier_right: int
    later_right: int
    only_earlier: int     # images the earlier step alone gets right
    only_later: int
    p_value: float        # chance of the earlier step winning this clearly if no worse
    later_kept: bool

    def sentence(self) -> str:
        counts = (f"{self.later} {self.later_right}/{self.images} against {self.earlier} "
                  f"{self.earlier_right}/{self.images} validation images right "
                  f"({self.later} alone on {self.only_later}, {self.earlier} alone on "
                  f"{self.only_earlier})")
        if not self.later_kept:
            return (f"{counts}: worse beyond chance (p = {self.p_value:.3f} < {SIGNIFICANCE}); "
                    f"{self.earlier} is kept")
        verdict = "no worse" if self.only_later >= self.only_earlier else \
            f"within chance (p = {self.p_value:.2f})"
        return f"{counts}: {verdict}; the later model is kept"


def compare(earlier: dict, later: dict, significance: float = SIGNIFICANCE) -> Comparison | None:
    """The paired comparison of two report rows, or None where they cannot be paired (a run
    from before the per-image record, or no validation images)."""
    a, b = earlier.get("val_correct"), later.get("val_correct")
    if not a or not b or len(a) != len(b):
        return None
    only_earlier = sum(x == "1" and y == "0" for x, y in zip(a, b))
    only_later = sum(x == "0" and y == "1" for x, y in zip(a, b))
    p = worse_by_chance(only_earlier, only_later)
    return Comparison(earlier=earlier["role"], later=later["role"], images=len(a),
                      earlier_right=a.count("1"), later_right=b.count("1"),
                      only_earlier=only_earlier, only_later=only_later, p_value=p,
                      later_kept=not (only_earlier > only_later and p < significance))


def kept_step(rows: list[dict], significance: float = SIGNIFICANCE
              ) -> tuple[int, list[Comparison], str]:
    """(the row the run keeps, the comparisons made, how it chose). Each step in turn is set
    against the step kept so far and replaces it unless validation shows it worse beyond
    chance. Rows without the per-image record (older runs) fall back to the best top-1 on
    validation; without validation images, the last step is kept."""
    if any(r.get("val_top1") is None for r in rows):
        return len(rows) - 1, [], "last"
    comparisons: list[Comparison] = []
    kept = 0
    for i in range(1, len(rows)):
        comparison = compare(rows[kept], rows[i], significance)
        if comparison is None:
            return best_on_validation(rows), [], "validation"
        comparisons.append(comparison)
        if comparison.later_kept:
            kept = i
    return kept, comparisons, "paired sign test on validation"


def best_on_validation(rows: list[dict]) -> int:
    """The older rule, for runs without the per-image record: the best top-1 on validation,
    a tie going to the lower validation loss, then to the later step."""
    losses = all(r.get("val_loss") is not None for r in rows)

    def rank(i: int) -> tuple:
        return rows[i]["val_top1"], -rows[i]["val_loss"] if losses else 0.0, i

    return max(range(len(rows)), key=rank)


def as_dicts(comparisons: list[Comparison]) -> list[dict]:
    return [asdict(c) for c in comparisons]
