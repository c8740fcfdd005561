"""Which step a self-training run keeps, and so which model teaches the next iteration, starts
the fine-tune and is served by ``export`` and ``predict``: never one below the teacher.

Two steps are compared on the same validation images, image by image: only the images one
of them gets right and the other wrong tell them apart. A later step replaces the kept one when

- the teacher is right on at most one validation image more than it (a student is never kept
  below the supervised model it started from: the worst thing a run can ship; a one-image
  lead is what a coin gives one of two equal models in half the draws, p = 0.5, and says
  nothing), and where the validation images are few (under SMALL_VALIDATION, one image over
  a point of top-1) it leads the teacher beyond a loose chance (LEAD_SIGNIFICANCE), and
- against the step kept so far, it is no worse beyond chance, or, for a step that cannot be
  trusted to have learned (planned short, trained fewer passes than a student needs, or ended
  far from its plan), no worse at all, and ahead of the teacher as on few images.

"Beyond chance" is an exact sign test (McNemar's test for paired counts): under "the later
step is no worse" each telling image is as likely to favour either, so the chance that the
earlier one wins at least as many as it did is a binomial tail. One image of 41 is 2.4 points
of top-1, which two percentages cannot weigh. Without validation images nothing can be checked
and the last step is kept, which the report says.

Why a lead on few images, and why a clear one: on 38 validation images a student right on 3
the teacher missed, and wrong on 1 it got, was 3.6 points below it on 1,000 test images (one
of 28 one-core runs; benchmarks/HISTORY.md), so a lead of p <= 0.3 was asked; then a student
alone right on 3 and never wrong where the teacher was right (p = 0.125) was 5.0 points below
its teacher on test (the odd folder, seed 1, 2026-12-07). On 30-38 images no looser bar tells
a gain from a loss: of 73 one-core students against their teachers, the 9 with p <= 0.3 ranged
from -5.0 to +4.9 points on test; at p <= 0.1 the one kept was +1.1. A folder with so few
labels keeps its teacher unless a student leads clearly: gains thrown away, never a loss
shipped.

Why one image of slack on 100 images and more: Fashion-MNIST's students (100 validation
images) differ from their teachers on 0-15 of them. Of 23 such students (2026-12-06 and 07,
every one +1.06 to +3.86 points above its teacher on 10,000 test images), "right on at least
as many" threw away 5, each one image behind (1 to 0, 3 to 2, 6 to 5), and with them a whole
run's gain (--budget 30m on one core, seed 0: 86.11% kept over students at 88.06% and 88.37%).
A collapse (the teacher alone right on 75, the student on 1) and a student 3 images behind
(the AVX2 demo of 2026-12-06, 1.6 points below on test) are still not kept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from . import runs, timings
from .layout import student_key

# The one-sided significance below which a later step counts as worse than the kept one.
SIGNIFICANCE = 0.05
# A student behind its teacher by this many validation images is still no worse than it: a
# lead of one is a coin's (p = 0.5).
TEACHER_SLACK = 1
# Under this many validation images a student must lead its teacher: its lead's chance, were
# it no better, at most LEAD_SIGNIFICANCE.
SMALL_VALIDATION = 100
LEAD_SIGNIFICANCE = 0.1
EXACT_UP_TO = 1_000  # discordant images counted exactly; beyond, the normal approximation

# Why a step was compared, and so which rule it had to pass.
AGAINST_TEACHER = "teacher"     # no worse than the teacher
AHEAD_OF_TEACHER = "ahead"      # ahead of the teacher beyond a loose chance (few images)
STRICT = "strict"               # an untrusted step: no worse than the kept one
CHANCE = "chance"               # no worse beyond chance than the kept one
# A student whose training took this much more or less than planned (as a fraction) did not
# run the schedule the plan weighed: it is trusted no further than validation shows.
FAR_FROM_PLAN = 0.3


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
    """A later step against an earlier one on the same validation images, and the verdict."""

    earlier: str          # roles, as the report names them
    later: str
    images: int
    earlier_right: int
    later_right: int
    only_earlier: int     # images the earlier step alone gets right
    only_later: int
    p_value: float        # chance of the earlier step winning this clearly if no worse
                          # (AHEAD_OF_TEACHER: of the later leading this clearly if no better)
    later_kept: bool
    rule: str = CHANCE    # AGAINST_TEACHER, STRICT or CHANCE
    kept: str = ""        # the step kept when the later one is not (its role)
    why_strict: str = ""  # why the later step had to be no worse (STRICT)

    def sentence(self) -> str:
        counts = (f"{self.later} {self.later_right}/{self.images} against {self.earlier} "
                  f"{self.earlier_right}/{self.images} validation images right "
                  f"({self.later} alone on {self.only_later}, {self.earlier} alone on "
                  f"{self.only_earlier})")
        stays = self.kept or self.earlier
        if self.later_kept:
            verdict = "no worse" if self.only_later >= self.only_earlier else \
                f"within chance (p = {self.p_value:.2f})"
            if self.rule == AHEAD_OF_TEACHER:
                verdict = f"ahead (p = {self.p_value:.2f})"
            if self.rule == AGAINST_TEACHER and self.only_later < self.only_earlier:
                verdict = "one image behind, a coin's lead (p = 0.50): no worse"
            return f"{counts}: {verdict}; the later model is kept"
        below = self.only_earlier > self.only_later
        if self.rule == AHEAD_OF_TEACHER and not below:
            who = self.why_strict or \
                f"on fewer than {SMALL_VALIDATION} validation images a student"
            return (f"{counts}: {who} must lead its teacher (p <= {LEAD_SIGNIFICANCE}; here "
                    f"{self.p_value:.2f}); {stays} stays kept")
        if self.rule in (AGAINST_TEACHER, AHEAD_OF_TEACHER):
            by = " by more than one image" if self.rule == AGAINST_TEACHER else ""
            return (f"{counts}: below the teacher on validation{by}, and a student is never "
                    f"kept below its teacher; {stays} stays kept")
        if self.rule == STRICT:
            return (f"{counts}: worse on validation, and {self.why_strict or 'this step'} "
                    f"must be no worse to be kept; {stays} stays kept")
        return (f"{counts}: worse beyond chance (p = {self.p_value:.3f} < {SIGNIFICANCE}); "
                f"{stays} stays kept")


def compare(earlier: dict, later: dict, significance: float = SIGNIFICANCE, *,
            rule: str = CHANCE) -> Comparison | None:
    """The paired comparison of two report rows under ``rule`` (AGAINST_TEACHER becomes
    AHEAD_OF_TEACHER on fewer than SMALL_VALIDATION images), or None where they cannot be
    paired (a run from before the per-image record, or no validation images)."""
    a, b = earlier.get("val_correct"), later.get("val_correct")
    if not a or not b or len(a) != len(b):
        return None
    only_earlier = sum(x == "1" and y == "0" for x, y in zip(a, b))
    only_later = sum(x == "0" and y == "1" for x, y in zip(a, b))
    if rule == AGAINST_TEACHER and len(a) < SMALL_VALIDATION:
        rule = AHEAD_OF_TEACHER
    p = worse_by_chance(only_earlier, only_later)
    worse = only_earlier > only_later
    passes = not (worse and p < significance)
    if rule == AGAINST_TEACHER:
        passes = only_earlier <= only_later + TEACHER_SLACK
    if rule == STRICT:
        passes = not worse
    if rule == AHEAD_OF_TEACHER:
        p = worse_by_chance(only_later, only_earlier)
        passes = only_later > only_earlier and p <= LEAD_SIGNIFICANCE
    return Comparison(earlier=earlier["role"], later=later["role"], images=len(a),
                      earlier_right=a.count("1"), later_right=b.count("1"),
                      only_earlier=only_earlier, only_later=only_later, p_value=p,
                      later_kept=passes, rule=rule)


def kept_step(rows: list[dict], untrusted: dict[int, str] | None = None,
              significance: float = SIGNIFICANCE) -> tuple[int, list[Comparison], str]:
    """(the row the run keeps, the comparison that decided each later step, how it chose).
    Each step in turn must be no worse than the teacher (row 0) on validation, then is set
    against the step kept so far: no worse beyond chance, or, where ``untrusted`` names it
    (row index -> why), ahead of the teacher and no worse at all than the kept step. Rows
    without the per-image record (older runs) fall back to the best top-1 on validation;
    without validation images, the last step is kept."""
    if any(r.get("val_top1") is None for r in rows):
        return len(rows) - 1, [], "last"
    untrusted = untrusted or {}
    comparisons: list[Comparison] = []
    kept = 0
    for i in range(1, len(rows)):
        strict = i in untrusted
        decided = compare(rows[0], rows[i], significance,
                          rule=AHEAD_OF_TEACHER if strict else AGAINST_TEACHER)
        if decided is None:
            return best_on_validation(rows), [], "validation"
        if strict:
            decided = _replace(decided, why_strict=untrusted[i])
        if decided.later_kept and kept:
            decided = compare(rows[kept], rows[i], significance,
                              rule=STRICT if strict else CHANCE)
            if strict:
                decided = _replace(decided, why_strict=untrusted[i])
        comparisons.append(_replace(decided, kept=rows[kept]["role"]))
        if decided.later_kept:
            kept = i
    return kept, comparisons, "paired sign test on validation, never below the teacher"


def untrusted_steps(run, iterations: int) -> dict[int, str]:
    """The students of a budgeted run that must be no worse than the step kept before them
    (row index -> why): those its plan marked short (plan.json's ``short``), those whose
    pace trained fewer passes than a student needs (plan.json's ``least_passes``) or far fewer
    than planned (more is what its minutes bought) and fewer than gain all a student can
    (``enough_passes``, from-scratch students: where a slower hour than the cached speeds
    bought 6.39 of 9.53 passes, student 1 was 1.48 points above its teacher on test and one
    validation image behind, and the run kept the teacher), and those whose training ended
    far from the minutes planned for it (FAR_FROM_PLAN either way)."""
    info, used = timings.planned(run), timings.read(run)
    planned, short = info.get("seconds", {}), set(info.get("short", ()))
    why = {}
    for k in range(1, iterations + 1):
        key = student_key(k)
        passes, least = _passes(Path(run) / key), info.get("least_passes", {}).get(key, 0)
        if key in short:
            why[k] = f"student {k}, planned shorter than a student needs,"
        elif passes and passes[1] < least:
            why[k] = (f"student {k}, which trained {passes[1]:.2f} passes, under the {least:g} "
                      "a student needs,")
        elif passes and passes[1] < passes[0] * (1 - FAR_FROM_PLAN) and \
                passes[1] < info.get("enough_passes", {}).get(key, math.inf):
            why[k] = (f"student {k}, which trained {passes[1]:.2f} passes of the "
                      f"{passes[0]:.2f} planned,")
        elif planned.get(key) and used.get(key) is not None and \
                abs(used[key] / planned[key] - 1) > FAR_FROM_PLAN:
            why[k] = (f"student {k}, which took {used[key] / 60:.1f} min of the "
                      f"{planned[key] / 60:.1f} planned,")
    return why


def _passes(student: Path) -> tuple[float, float] | None:
    """(planned, trained) passes of a finished student whose length its pace fitted."""
    config, metrics = student / runs.CONFIG, student / runs.METRICS
    if not (config.is_file() and metrics.is_file()):
        return None
    planned = runs.read_yaml(config)
    if not planned.get("minutes") or not planned.get("passes"):
        return None
    return planned["passes"], runs.read_json(metrics).get("passes", planned["passes"])


def _replace(comparison: Comparison, **changes) -> Comparison:
    return Comparison(**{**asdict(comparison), **changes})


def best_on_validation(rows: list[dict]) -> int:
    """The older rule, for runs without the per-image record: the best top-1 on validation,
    a tie going to the lower validation loss, then to the later step."""
    losses = all(r.get("val_loss") is not None for r in rows)

    def rank(i: int) -> tuple:
        return rows[i]["val_top1"], -rows[i]["val_loss"] if losses else 0.0, i

    return max(range(len(rows)), key=rank)


def as_dicts(comparisons: list[Comparison]) -> list[dict]:
    return [asdict(c) for c in comparisons]
