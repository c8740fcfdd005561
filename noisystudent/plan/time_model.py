"""The one time model: how long a step takes and how the students share what a budget leaves,
used by the plan before the run (``prices.py``) and by the re-planning before each student
(``replan.py``), so that the two agree by construction.

- A training step costs STEP_OVERHEAD, the images it trains on at its training rate, and the
  images it evaluates (the test set once, the validation images every epoch) at its
  inference rate (``step_seconds``).
- A student's pass over its pseudo-labeled images also trains the labeled batch beside each
  pseudo-labeled one (``trained_per_pass``), at the bare step's measured rate times
  STUDENT_STEP (``student_rate``).
- The students share the time left 3:4, the first against each later one (they learn from
  better labels), each at least LEAST_PASSES (``shares``), after the labelings still to come
  and each student's fixed part (``fit_passes``, on each student's own ``StudentPrices``:
  the students of a run may be different models); the plan aims at AIM of the budget
  (``timings.Budget.usable``).

The first plan calls ``fit_passes`` with what the budget leaves after the teacher and the
first labeling it plans; each re-plan calls it with what the budget leaves after the steps
that ran: on the same inputs the two give the same minutes (tests/test_plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from noisystudent.deploy.labeling import EXPORT_SECONDS

STEP_OVERHEAD = 10.0    # s a training step spends outside its epochs and evaluations
# A student's step, whose minutes its pace trains (training/pace.py): outside its training and
# evaluation it spent 2-5 s in each of 14 one-core runs (Fashion-MNIST, photos, the odd
# folder; 2026-12-07), where STEP_OVERHEAD left each run 9 s short a student.
STUDENT_OVERHEAD = 3.0
# A student's step against the bare step the plan measures (labeled and pseudo-labeled
# batches, batched RandAugment, the EMA), decoding aside: 0.73 (cifar_airbench_s) and 0.75
# (Lite0) on the photo test bed, whose images stream (benchmarks/HISTORY.md, "Recipes from
# the plan");
# 0.91 on Fashion-MNIST in memory, where a one-core run's student 1 trained even faster than
# its bare step measured just before. Where a student still ends early, the minutes it leaves
# go to another iteration (``plan.worth_another``).
STUDENT_STEP = {"streamed": 0.73, "in memory": 0.91}
FIRST_STUDENT, LATER_STUDENT = 3.0, 4.0  # the students' shares of the time left
LEAST_PASSES = 0.05     # the fewest passes a student is planned, however short the time


@dataclass(frozen=True)
class StudentShape:
    """What a student's time depends on: its model at its input, its batches, its epochs
    (a StudentConfig's fields of the same names, or the plan's values for them)."""

    model: str
    image_size: int
    in_chans: int
    model_options: dict[str, Any]
    batch_size: int
    unlabeled_ratio: int
    epochs: int

    @classmethod
    def of(cls, value: Any) -> StudentShape:
        """From anything with these attributes (a StudentConfig), or from ``value(name)``."""
        get = value if callable(value) else lambda name: getattr(value, name)
        return cls(**{f.name: get(f.name) for f in fields(cls)})

    @property
    def images_per_step(self) -> int:
        return self.batch_size * (1 + self.unlabeled_ratio)


def evaluated_images(test: int, val: int, epochs: float) -> float:
    """Images a training step evaluates: the test set once, the validation images each
    epoch."""
    return test + epochs * val


def step_seconds(evaluated: float, infer_rate: float, trained: float = 0.0,
                 train_rate: float = 1.0) -> float:
    """A training step's wall time: STEP_OVERHEAD, ``trained`` images at ``train_rate`` and
    ``evaluated`` images at ``infer_rate`` (only its fixed part without ``trained``)."""
    return STEP_OVERHEAD + trained / train_rate + evaluated / infer_rate


def trained_per_pass(pile: int, unlabeled_ratio: int) -> float:
    """Images a student trains on in one pass over ``pile`` pseudo-labeled images: a labeled
    batch 1/ratio the size of each pseudo-labeled one."""
    return pile * (1 + unlabeled_ratio) / unlabeled_ratio


def student_rate(rates, student: StudentShape, streams: bool = False) -> float:
    """Images/s a student's step trains: the bare step's measured rate (``rates``: a
    plan.rates.Rates) times STUDENT_STEP (its images streamed from files or in memory)."""
    step = STUDENT_STEP["streamed" if streams else "in memory"]
    return step * rates.training(student.model, student.image_size, student.in_chans,
                                 student.images_per_step, student.model_options)


def inference_rate(rates, model) -> float:
    """Images/s ``model`` (a StudentShape, or a stage's config) labels and evaluates at."""
    return rates.inference(*labeler(model))


def labeler(model) -> tuple:
    """(model, size, channels, options) of ``model`` (a StudentShape, or a stage's config):
    what its rates are cached under (``Rates``)."""
    return model.model, model.image_size, model.in_chans, model.model_options


def shares(first: int, last: int) -> list[float]:
    """The weights of students ``first`` to ``last`` in the time left: 3 for student 1, 4 for
    each later one."""
    return [FIRST_STUDENT if k == 1 else LATER_STUDENT for k in range(first, last + 1)]


@dataclass(frozen=True)
class StudentPrices:
    """What a student costs, in seconds: a pass over its pile (training, and decoding where
    its images stream), its fixed part (STUDENT_OVERHEAD and its evaluations), and a labeling of
    the pile by it (every view, and decoding)."""

    per_pass: float
    fixed: float
    labeling: float

    @classmethod
    def of(cls, *, pile: int, labeled: int, train_rate: float, infer_rate: float,
           unlabeled_ratio: int, evaluated: float, views: int, decode: float,
           streams: bool, onnx_speedup: float = 0.0) -> StudentPrices:
        """From the pile it learns (``pile``, after selection) and labels (``labeled``), its
        rates (images/s), the images it evaluates and seconds to decode one image (each pass
        decodes the pile again where it ``streams`` from files); ``onnx_speedup`` where ONNX
        Runtime labels."""
        per_pass = trained_per_pass(pile, unlabeled_ratio) / train_rate
        return cls(per_pass=per_pass + (pile * decode if streams else 0.0),
                   fixed=STUDENT_OVERHEAD + evaluated / infer_rate,
                   labeling=labeling_seconds(labeled, views, infer_rate, decode, onnx_speedup))


def labeling_seconds(images: int, views: int, infer_rate: float, decode: float,
                     onnx_speedup: float = 0.0) -> float:
    """A labeling of ``images``: STEP_OVERHEAD, every view at the labeler's inference rate
    (where ONNX Runtime labels, ``onnx_speedup`` times it after the export:
    ``Rates.onnx_speedup``), and decoding each image once."""
    if onnx_speedup:
        return STEP_OVERHEAD + EXPORT_SECONDS + images * (views / (infer_rate * onnx_speedup)
                                                          + decode)
    return STEP_OVERHEAD + images * (views / infer_rate + decode)


def fit_passes(left: float, first: int, prices: list[StudentPrices]) -> list[float]:
    """Passes of students ``first`` to ``first + len(prices) - 1`` (``prices``: each one's
    own) sharing ``left`` seconds (``shares``) after their fixed parts and the labelings
    between them (student k labels for student k + 1); each at least LEAST_PASSES."""
    left -= sum(p.labeling for p in prices[:-1]) + sum(p.fixed for p in prices)
    weights = shares(first, first + len(prices) - 1)
    return [max(LEAST_PASSES, left * w / sum(weights) / p.per_pass)
            for p, w in zip(prices, weights)]
