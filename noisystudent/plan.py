"""The plan: what ``self-train`` does with every setting the user left unset, chosen from the
data (how many images, how large, gray or colour), the machine (how fast it trains and runs
each model, measured once and cached) and, when given, a time budget. Every planned value
carries its reason; ``--print-config`` prints it beside the value and marks the values the
user set, which the plan never changes.

The rules and the measurements behind them (BENCHMARKS.md, "Recipes from the plan"):

- **Teacher**: the ImageNet-pretrained Lite0, at the images' stored size rounded up to a
  multiple of 32, never below 64 (at 32 px it lost 2.5 points on Fashion-MNIST) nor above
  224 (its weights' size); with a budget, the largest of those sizes whose training and first
  labeling fit in TEACHER_SHARE of it.
- **Student**: from scratch in the airbench family at the images' size (at most 32 px) when
  the images are small (stored under PHOTO_SIZE px) and the unlabeled pile is large (at
  least LARGE_PILE images); otherwise the teacher's pretrained model at the teacher's size
  (equal size, its ImageNet weights). At equal minutes on photos with 20 labels a class, the
  from-scratch student won by 1.1 points on 20,000 unlabeled images and lost by 1.7 on 2,000.
- **Length**: without a budget, the measured recipes' lengths (teacher 30 epochs; from-scratch
  students 3 and 4 passes; pretrained ones 5). With one, the students share what the
  teacher, the labeling and the report leave, 3:4 between two iterations, at the rates
  measured on this machine; one iteration when two would each get less than MIN_PASSES.
- **Report**: with a budget, the corruption test gets at most REPORT_SHARE of it (fewer
  corrupted images, or none).

A run with a budget plans each student again from what is left (``replan_student``), at
the speeds its finished steps measured, drops an iteration the time left cannot pay for
(``worth_another``) and shrinks the corruption test when time ran short
(``replan_report``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisystudent.data.files import find_images, is_image_file

from . import runs
from .errors import UserError

log = logging.getLogger(__name__)

# --- the rules' thresholds -----------------------------------------------------------------
# From scratch or pretrained (BENCHMARKS.md, "Recipes from the plan"): on photos of 64-96 px
# with 20 labels a class, at equal minutes, a from-scratch cifar_airbench_s at 32 px beat a
# pretrained Lite0 at 64 px by 1.1 points on 20,000 unlabeled images and lost by 1.7 on 2,000.
PHOTO_SIZE = 96         # px: stored at least this, the images are photos a 32 px student blurs
LARGE_PILE = 20_000     # unlabeled images: at least this many, a from-scratch student pays
SMALL_IMAGE = 32        # px: the small-image family's input size
TEACHER_MIN_SIZE, TEACHER_MAX_SIZE = 64, 224
# Fewer validation images than this at the default 10% (held out of few labels), the plan
# holds none out: a paired sign test on them cannot tell a later step worse unless it lost
# 5% of them or more, and the labels pay more in training (BENCHMARKS.md, "What the held-out
# 10% costs the teacher").
MIN_VALIDATION = 100
TEACHER_SHARE = 0.35    # of the budget: the teacher's training and its labeling
# A small image's teacher upscales to at most this: on Fashion-MNIST (28 px) 64 -> 96 px gave
# +1.0 point of label accuracy; 128 px gave -0.26 and +0.56 in two measurements for twice the
# minutes (BENCHMARKS.md, "The teacher table behind the plan").
TEACHER_UPSCALE = 96
REPORT_SHARE = 0.08     # of the budget: the corruption test
AIM = 0.92              # the plan aims below the budget: a step's estimate can be off by 10%
MIN_PASSES = {"scratch": 2.0, "pretrained": 1.0}
SCRATCH_PASSES = (3.0, 4.0)  # the airbench CPU recipe's students (no budget)
# Warm-up steps a from-scratch student gets at least: with 21 steps up to lr 0.8, a student
# of 1.1 passes collapsed (46.5%, below its 81% teacher); with 63 it reached 84.6%
# (BENCHMARKS.md, "A short student's warm-up").
MIN_WARMUP_STEPS = 60
FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_TRAIN, FASHION_MNIST_TEST, FASHION_MNIST_CLASSES = 60_000, 10_000, 10
SAMPLED_IMAGES = 32     # files opened to learn the images' size and colour
COUNT_LIMIT = 1_000_000  # files counted in an unlabeled folder before calling it large
CORRUPTED = 15 * 5      # corruption types x severities in the report
MIN_CORRUPTION_IMAGES = 200
STEP_OVERHEAD = 10.0    # s a training step spends outside its epochs and evaluations
INFERENCE_BATCH = 512   # labeling's batch
# A student's step against the bare step the plan measures (labeled and pseudo-labeled
# batches, batched RandAugment, the EMA), decoding aside: 0.73 (cifar_airbench_s) and 0.75
# (Lite0) on the photo test bed, 0.91 on Fashion-MNIST in memory (BENCHMARKS.md, "Recipes
# from the plan"). The lowest, so that a first student rather ends early than late.
STUDENT_STEP = 0.73

# The from-scratch student: configs/fashion-mnist-1000-airbench-cpu.yaml's (BENCHMARKS.md,
# "The CPU recipe on the airbench family").
SCRATCH_STUDENT = {
    "model": "cifar_airbench_s", "pretrained": "none", "model_options": {"flip_tta": True},
    "batch_size": 128, "unlabeled_ratio": 3, "loss_weighting": "per-image",
    "optimizer": "sgd", "lr": 0.8, "momentum": 0.9, "weight_decay": 0.0001,
    "norm_bias_lr_scale": 64, "warmup_epochs": 0.5, "label_smoothing": 0.2,
    "augment": "randaugment", "randaugment_ops": 2, "randaugment_magnitude": 9,
    "padding": "reflect", "drop_rate": 0.2, "drop_path_rate": 0.0, "ema_decay": 0.99,
    "epochs": 4,
}


# --- the data ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataFacts:
    """What the plan knows of the data, read without decoding it all."""

    labeled: int        # labeled images the run trains on (after the validation split)
    val: int            # validation images
    test: int           # test images (0: no test set)
    classes: int
    pile: int           # unlabeled images
    stored_size: int    # median shorter side of the images as stored, px
    grayscale: bool
    pile_note: str = ""  # how the pile was counted, where it could not be

    def describe(self) -> str:
        colour = "gray" if self.grayscale else "colour"
        return (f"{self.labeled:,} labeled images ({self.val:,} for validation), "
                f"{self.pile:,} unlabeled{self.pile_note}, {self.classes} classes, "
                f"{self.stored_size} px {colour}")


def survey(shared: dict[str, Any], unlabeled: str | None) -> DataFacts:
    """The data's facts from the shared settings (data, labels_per_class, val_fraction, ...)
    and the unlabeled source."""
    from noisystudent.data.splits import held_out

    data, per_class = shared["data"], shared["labels_per_class"]
    if data == FASHION_MNIST:
        classes, sizes, gray = FASHION_MNIST_CLASSES, [28], True
        counts = [FASHION_MNIST_TRAIN // classes] * classes
        test = FASHION_MNIST_TEST
    else:
        files_per_class = _labeled_files(Path(data))
        classes = len(files_per_class)
        counts = [len(files) for files in files_per_class.values()]
        sample = [f for files in files_per_class.values() for f in files[:4]]
        sizes, gray = _look_at(sample[:SAMPLED_IMAGES])
        test = len(_all_files(Path(shared["test_data"]))) if shared.get("test_data") else 0
    drawn = [min(per_class, n) if per_class else n for n in counts]
    val = shared["val_per_class"] * classes if shared["val_per_class"] else sum(
        held_out(n, shared["val_fraction"]) for n in drawn)
    labeled = sum(drawn) - (0 if shared["val_per_class"] else val)
    note = ""
    if unlabeled:
        pile, note, pile_sizes, pile_gray = _pile(unlabeled)
        sizes, gray = sizes + pile_sizes, gray and pile_gray
    else:
        pile = sum(counts) - sum(drawn) - (val if shared["val_per_class"] else 0)
    return DataFacts(labeled=labeled, val=val, test=test, classes=classes, pile=max(0, pile),
                     stored_size=int(statistics.median(sizes)), grayscale=gray,
                     pile_note=note)


def _labeled_files(path: Path) -> dict[str, list[Path]]:
    if path.is_dir():
        return {d.name: find_images(d) for d in sorted(path.iterdir())
                if d.is_dir() and not d.name.startswith(".")}
    if path.is_file() and path.suffix.lower() == ".csv":
        import csv

        by_label: dict[str, list[Path]] = {}
        with path.open(newline="") as f:
            for row in csv.reader(f):
                if len(row) >= 2 and row[0] != "path":
                    by_label.setdefault(row[1], []).append(path.parent / row[0])
        return by_label
    raise UserError(f"data not found: {path} (give 'fashion-mnist', a folder or a .csv)")


def _all_files(path: Path) -> list[Path]:
    return find_images(path) if path.is_dir() else list(_labeled_files(path).values())


def _look_at(files: list[Path]) -> tuple[list[int], bool]:
    """The shorter side of each file that opens, and whether all of them are gray."""
    import numpy as np
    from PIL import Image

    sizes, gray = [], True
    for path in files:
        try:
            with Image.open(path) as img:
                sizes.append(min(img.size))
                if img.mode not in ("L", "1", "I", "I;16", "F"):
                    pixels = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.int16)
                    gray = gray and int(np.abs(pixels - pixels[..., :1]).max()) <= 2
        except (OSError, ValueError):
            continue  # the loaders count and report unreadable files
    return sizes or [TEACHER_MAX_SIZE], gray


def _pile(unlabeled: str) -> tuple[int, str, list[int], bool]:
    """(count, how it was counted, sampled sizes, gray) of the unlabeled source."""
    path = Path(unlabeled)
    if path.suffix == ".npy" and path.is_file():
        import numpy as np

        shape = np.load(path, mmap_mode="r").shape
        return shape[0], "", [shape[-1]], shape[1] == 1
    if path.is_dir() and not any(path.glob("*.tar")):
        files = []
        for item in path.rglob("*"):
            if is_image_file(item):
                files.append(item)
                if len(files) >= COUNT_LIMIT:
                    return len(files), " (counted up to here)", *_look_at(files[:SAMPLED_IMAGES])
        return len(files), "", *_look_at(files[:SAMPLED_IMAGES])
    # Tar shards: not opened to count; a pile split into shards is large.
    return LARGE_PILE, " (tar shards: taken as large)", [], True


# --- the machine ---------------------------------------------------------------------------

RATES_FILE = "rates.json"


# Bumped when the measurement changes, so that older cached rates are measured again
# (2: timed in the dtype ``precision: auto`` trains in; 1 timed fp32 on bf16 CPUs too).
RATES_VERSION = 2


class Rates:
    """Images/s of training and of inference per (model, size, channels) on this machine,
    measured once (a few steps, after warm-up) and cached in ``$NOISYSTUDENT_CACHE``; a
    finished step's own speed overrides the measurement (``observe``)."""

    def __init__(self, device: str = "auto", precision: str = "auto", fresh: bool = False):
        self.device, self.precision = device, precision
        self.observed: dict[str, float] = {}
        self.spent = 0.0  # seconds spent measuring: part of the run's time
        self.fresh = fresh  # measure again whatever the cache holds (and cache the new rates)
        self.remeasured: set[str] = set()

    def training(self, model: str, size: int, in_chans: int, batch: int,
                 options: dict | None = None) -> float:
        key = self._key("train", model, size, in_chans, options)
        return self.observed.get(key) or self._measured(key, model, size, in_chans, batch,
                                                        options)[0]

    def inference(self, model: str, size: int, in_chans: int,
                  options: dict | None = None) -> float:
        key = self._key("infer", model, size, in_chans, options)
        return self.observed.get(key) or self._measured(
            self._key("train", model, size, in_chans, options), model, size, in_chans, 64,
            options)[1]

    def observe(self, kind: str, model: str, size: int, in_chans: int, options: dict | None,
                images_per_s: float) -> None:
        self.observed[self._key(kind, model, size, in_chans, options)] = images_per_s

    def machine(self) -> str:
        """What the rates are timed on, and what its kind means for the plan: the same rules
        run on every machine, fed its own speed."""
        import torch

        from noisystudent.models.precision import _cpu_name

        from .device import cpu_kind, resolve_device

        device = resolve_device(self.device)
        if device.type == "cuda":
            return f"timed on {torch.cuda.get_device_name(device)}"
        kind = cpu_kind()
        name = f"timed on this CPU: {_cpu_name()}, {torch.get_num_threads()} threads, {kind}"
        if self.precision != "auto":
            return f"{name}, precision {self.precision} as set"
        if kind == "AVX2":
            return (f"{name}: no bf16 units, so everything trains in fp32 and the same budget "
                    "buys a lower rung of the teacher ladder and shorter students than on a CPU "
                    "with AVX-512 BF16 or AMX")
        return f"{name}: each model trains in the faster of fp32 and bf16 here"

    def _key(self, kind: str, model: str, size: int, in_chans: int,
             options: dict | None) -> str:
        return json.dumps([kind, model, size, in_chans, options or {}])

    def _measured(self, key: str, model: str, size: int, in_chans: int, batch: int,
                  options: dict | None) -> tuple[float, float]:
        import torch

        from noisystudent.models.precision import _cpu_name, read_cache, write_cache

        from .device import resolve_device

        device = resolve_device(self.device)
        machine = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        full = json.dumps([machine, torch.__version__, torch.get_num_threads(),
                           self.precision, key, RATES_VERSION])
        path = runs.cache_root() / RATES_FILE
        cache = read_cache(path)
        if full not in cache or (self.fresh and full not in self.remeasured):
            self.remeasured.add(full)
            start = time.perf_counter()
            cache[full] = measure(model, size, in_chans, min(batch, 512), options, device,
                                  self.precision)
            self.spent += time.perf_counter() - start
            log.info("plan: measured %s @%d px on this machine: %.0f images/s training, %.0f "
                     "inference (%.0f s; cached in %s)", model, size, *cache[full],
                     time.perf_counter() - start, path)
            write_cache(path, cache)
        return tuple(cache[full])


def measure(model_name: str, size: int, in_chans: int, batch: int, options: dict | None,
            device, precision: str) -> tuple[float, float]:
    """(training, inference) images/s of ``model_name`` at ``size`` px, in the precision a
    stage would train and label in: timed steps after a warm-up, on a batch that takes about
    a second (at most the stage's ``batch``: a small model's rate at batch 16 is mostly
    per-step overhead)."""
    import torch
    import torch.nn.functional as F

    from noisystudent.models.build import create_model
    from noisystudent.models.precision import auto_training_dtype, measures_training_dtype

    from .device import autocast, resolve_precision

    # Time the dtype the stage will train in: on a Zen 5 the airbench student trains in bf16
    # at 1.5x its fp32 speed, and timed in fp32 its plan was 2.7x too short.
    train_dtype = (auto_training_dtype(model_name, size, in_chans, options, batch)
                   if measures_training_dtype(precision, device)
                   else resolve_precision(precision, device, training=True))
    state = torch.random.get_rng_state()  # measuring must not move the run's random stream
    model = create_model(model_name, 10, in_chans=in_chans, options=options).to(
        device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    infer_dtype = resolve_precision(precision, device, training=False)

    def images(n: int) -> torch.Tensor:
        return torch.randn(n, in_chans, size, size, device=device).to(
            memory_format=torch.channels_last)

    def train_step(x: torch.Tensor) -> None:
        with autocast(device, train_dtype):
            loss = F.cross_entropy(model(x).float(), torch.zeros(len(x), dtype=torch.long,
                                                                  device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step(x: torch.Tensor) -> None:
        with torch.no_grad(), autocast(device, infer_dtype):
            model(x)

    def timed(step, x: torch.Tensor, at_least: int = 3, seconds: float = 1.0) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, steps = time.perf_counter(), 0
        while steps < at_least or time.perf_counter() - start < seconds:
            step(x)
            steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return len(x) * steps / (time.perf_counter() - start)

    def rate(step, mode: bool, largest: int) -> float:
        model.train(mode)
        probe = images(min(16, largest))
        step(probe)  # warm-up: kernels chosen, memory touched
        first = timed(step, probe, at_least=1, seconds=0.0)
        x = images(int(min(largest, max(16, first))))  # about a second a step
        step(x)
        return timed(step, x)

    rates = rate(train_step, True, batch), rate(infer_step, False, INFERENCE_BATCH)
    torch.random.set_rng_state(state)
    return rates

FLIP_REASON = ("the teacher learned mirrored images, so its labels average each image and its "
               "mirror (+0.3 points of label accuracy on Fashion-MNIST at 64 and 96 px, for a "
               "second labeling pass)")


# --- the plan --------------------------------------------------------------------------------

@dataclass
class Plan:
    """Planned values (dotted keys) with their reasons, over what the user ``given``."""

    given: dict[str, Any]
    facts: DataFacts
    budget_minutes: float | None = None
    typed: Any = None  # the config of the user's values alone (for their types)
    teacher: tuple[str, int] | None = None  # a teacher_run's (model, size)
    rates: Rates | None = None
    values: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # planned time per step

    def value(self, key: str) -> Any:
        """What the run will use: the planned value where the plan set one, else the user's
        or the default (typed)."""
        if key in self.values:
            return self.values[key]
        node = self.typed
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def teacher_model(self) -> str:
        return self.teacher[0] if self.teacher else self.value("teacher.model")

    def teacher_size(self) -> int:
        return self.teacher[1] if self.teacher else self.value("teacher.image_size")

    def set(self, key: str, value: Any, reason: str) -> None:
        if _lookup(self.given, key) is _MISSING:
            self.values[key] = value
            self.reasons[key] = reason

    def user_set(self, key: str) -> bool:
        return _lookup(self.given, key) is not _MISSING

    def merged(self) -> dict[str, Any]:
        """The config's values: the planned ones, with the user's over them."""
        from .config import apply_overrides

        return apply_overrides(self.given, {k: v for k, v in self.values.items()})


_MISSING = object()


def _lookup(values: dict, dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def flat_keys(values: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in values.items():
        if isinstance(value, dict) and key in _SECTIONS:
            keys |= flat_keys(value, prefix + key + ".")
        else:
            keys.add(prefix + key)
    return keys


_SECTIONS = ("teacher", "student", "pseudo_label", "finetune")


def make_plan(given: dict[str, Any], rates: Rates | None = None) -> Plan:
    """The plan for a self-train config's ``given`` values (YAML and flags, not yet built)."""
    from .config import SelfTrainConfig, SharedSettings, build

    typed = build(SelfTrainConfig, given)  # the user's values, checked and typed
    shared = {k: getattr(typed, k) for k in SharedSettings.model_fields}
    every_label = typed.data != FASHION_MNIST and "labels_per_class" not in given
    if every_label:
        shared["labels_per_class"] = 0
    facts = survey(shared, typed.unlabeled)
    if typed.pseudo_label.max_images:  # only the first N are labeled
        facts = dataclasses.replace(facts, pile=min(facts.pile, typed.pseudo_label.max_images))
    if typed.budget is not None and rates is None:
        rates = Rates(typed.device, typed.precision)
    plan = Plan(given, facts, typed.budget, typed=typed, rates=rates)
    if every_label:
        plan.set("labels_per_class", 0, "your labeled images: every one is used")
    choose_data(plan)
    choose_teacher(plan, rates)
    choose_student(plan)
    choose_lengths(plan, rates)
    return plan


def choose_data(plan: Plan) -> None:
    facts = plan.facts
    if facts.val and facts.val < MIN_VALIDATION and not plan.user_set("val_fraction") \
            and not plan.user_set("val_per_class"):
        from .keep import fewest_telling

        least = fewest_telling()
        plan.set("val_fraction", 0.0,
                 f"10% of the labels would be {facts.val} validation images: they could show a "
                 f"later step worse only where it lost {100 * least / facts.val:.0f} points or "
                 f"more ({least} images, the fewest a sign test calls beyond chance), and they "
                 f"would cost the teacher {facts.val} labels; so every label is trained on and "
                 f"the run keeps its last step, as Noisy Student expects")
        plan.facts = dataclasses.replace(facts, labeled=facts.labeled + facts.val, val=0)
    if plan.value("data") != FASHION_MNIST and facts.grayscale:
        plan.set("channels", 1, "the images are gray: read with one channel (a third of the "
                 "memory)")


def teacher_sizes(facts: DataFacts, upscale: int = 0) -> list[int]:
    """The teacher's candidate sizes, largest first: multiples of 32 from the images' stored
    size (rounded up; with ``upscale``, at least that) down to TEACHER_MIN_SIZE."""
    top = min(TEACHER_MAX_SIZE, max(TEACHER_MIN_SIZE, upscale,
                                    32 * math.ceil(facts.stored_size / 32)))
    return list(range(top, TEACHER_MIN_SIZE - 1, -32))


@dataclass(frozen=True)
class TeacherRung:
    """One teacher the plan can buy: a model, its input size and epochs, labels averaged over
    the mirror or not."""

    model: str
    size: int
    epochs: int
    flip: bool


def teacher_ladder(plan: Plan) -> list[TeacherRung]:
    """The teachers a budget can buy, cheapest first, each with better labels than the one
    before on the teacher table (BENCHMARKS.md, "The teacher table behind the plan"). Each
    size from 64 px up to TEACHER_UPSCALE px (or the images' own size, if larger): above the
    smallest, first for half the epochs (at 96 px 15 epochs gave labels 0.2 points below 30,
    in half the time, and 0.5 above 64 px's), then all of them, then with labels averaged over
    the mirror (one more labeling pass: +0.3 points at 64 and 96 px)."""
    model, epochs = plan.value("teacher.model"), plan.value("teacher.epochs")
    sizes = [plan.value("teacher.image_size")] if plan.user_set("teacher.image_size") else \
        teacher_sizes(plan.facts, TEACHER_UPSCALE)[::-1]
    flips = (False, True) if can_flip(plan) else (plan.value("pseudo_label.flip"),)
    ladder = []
    for i, size in enumerate(sizes):
        if i and not plan.user_set("teacher.epochs"):
            ladder.append(TeacherRung(model, size, max(5, epochs // 2), flips[0]))
        ladder += [TeacherRung(model, size, epochs, flip) for flip in flips]
    return ladder


def can_flip(plan: Plan) -> bool:
    """Whether the plan may average the teacher's labels over the mirror: not where the user
    chose, and only for a teacher that learned mirrored images (its augment flips)."""
    return not plan.user_set("pseudo_label.flip") and plan.value("teacher.augment") != "none"


def choose_teacher(plan: Plan, rates: Rates | None) -> None:
    facts = plan.facts
    if plan.value("teacher_run"):  # a finished teacher: its model and size are what they are
        try:
            info = runs.read_json(runs.require_run(plan.value("teacher_run"), runs.MODEL_INFO)
                                  / runs.MODEL_INFO)
        except (UserError, OSError, ValueError, KeyError):
            return  # the run says what is wrong with it
        plan.teacher = (info["model"], info["input"]["size"])
        return
    if plan.budget_minutes is None:  # the measured recipes' teacher, its labels flip-averaged
        plan.set("teacher.image_size", teacher_sizes(facts)[0],
                 f"the images' stored size ({facts.stored_size} px) rounded up to a multiple "
                 f"of 32, at least {TEACHER_MIN_SIZE} (a pretrained teacher lost 2.5 points at "
                 f"32 px) and at most {TEACHER_MAX_SIZE} (its weights' size)")
        if can_flip(plan) and not plan.user_set("teacher.image_size"):  # a teacher it chose
            plan.set("pseudo_label.flip", True, FLIP_REASON)
        return
    share = TEACHER_SHARE * AIM * 60 * plan.budget_minutes
    ladder = teacher_ladder(plan)
    fitting = []
    for i, rung in enumerate(ladder):
        if teacher_seconds(plan, rates, rung.size, rung.epochs, rung.model) \
                + pile_seconds(plan, rates, rung.size, rung.flip, rung.model) <= share:
            fitting.append(rung)
        elif not i or ladder[i - 1].size != rung.size:
            break  # a size whose cheapest rung does not fit: larger ones are not measured
    rung = fitting[-1] if fitting else ladder[0]
    why = (f"the best teacher of the ladder (each size: half the epochs, all, then "
           f"flip-averaged labels) whose training and labeling fit {TEACHER_SHARE:.0%} of the "
           f"budget on this machine ({share / 60:.1f} min)")
    plan.set("teacher.model", rung.model, why)
    plan.set("teacher.image_size", rung.size,
             why + f"; small images are upscaled up to {TEACHER_UPSCALE} px, which paid on "
             "Fashion-MNIST's 28 px images at each step from 64 px")
    if rung.epochs != plan.value("teacher.epochs"):
        plan.set("teacher.epochs", rung.epochs, why)
    if can_flip(plan):
        plan.set("pseudo_label.flip", rung.flip, FLIP_REASON if rung.flip else
                 "averaging over the mirror (a second labeling pass) does not fit the budget")
    if not fitting and not plan.user_set("teacher.epochs"):  # even the cheapest is too long
        fitted = rung.epochs
        while fitted > 5 and teacher_seconds(plan, rates, rung.size, fitted) + pile_seconds(
                plan, rates, rung.size, rung.flip) > share:
            fitted -= 5
        plan.set("teacher.epochs", fitted, f"the most (of {rung.epochs}) that fit "
                 f"{TEACHER_SHARE:.0%} of the budget at the smallest size")


def scratch(plan: Plan) -> bool:
    """Whether the students learn from scratch in a small-image family (the user's model,
    else the rule)."""
    if plan.user_set("student_models"):
        return plan.value("student_models")[0].startswith("cifar_")
    if plan.user_set("student.model"):
        return plan.value("student.model").startswith("cifar_")
    return plan.facts.stored_size < PHOTO_SIZE and plan.facts.pile >= LARGE_PILE


def choose_student(plan: Plan) -> None:
    facts = plan.facts
    if plan.user_set("student.model") or plan.user_set("student_models"):
        if scratch(plan):
            plan.set("student.pretrained", "none", "a small-image model has no ImageNet weights")
            plan.set("student.image_size", min(facts.stored_size, SMALL_IMAGE),
                     "a small-image model at the images' size (at most 32 px)")
        else:
            plan.set("student.image_size", plan.teacher_size(),
                     "the teacher's size")
        return
    if scratch(plan):
        why = (f"the images are small ({facts.stored_size} px < {PHOTO_SIZE}) and the pile is "
               f"large ({facts.pile:,} >= {LARGE_PILE:,}): a small-image student from scratch "
               "learns most per minute (+1.1 points on 20,000 photos)")
        for key, value in SCRATCH_STUDENT.items():
            plan.set(f"student.{key}", value, why if key == "model" else
                     "the airbench family's (configs/fashion-mnist-1000-airbench-cpu.yaml)")
        plan.set("student.image_size", min(facts.stored_size, SMALL_IMAGE),
                 f"the family's size: the images' own, at most {SMALL_IMAGE} px")
        if facts.grayscale:
            plan.set("student.in_chans", 1, "the images are gray")
        return
    small = facts.pile < LARGE_PILE
    why = (f"the pile is small ({facts.pile:,} < {LARGE_PILE:,}): a pretrained student of the "
           "teacher's size (from scratch: -1.7 points on 2,000 photos)" if small else
           f"the images are photos ({facts.stored_size} px >= {PHOTO_SIZE}): a pretrained "
           "student of the teacher's size keeps their detail")
    plan.set("student.model", plan.teacher_model(), why)
    plan.set("student.pretrained", "offline", "ImageNet weights, as the teacher")
    plan.set("student.image_size", plan.teacher_size(), "the teacher's size")


def choose_lengths(plan: Plan, rates: Rates | None) -> None:
    family = "scratch" if scratch(plan) else "pretrained"
    if any(plan.user_set(key) for key in ("student.passes", "student.steps_per_epoch",
                                          "students")):
        return  # the user chose the students' lengths
    if plan.budget_minutes is None:
        if family == "scratch" and "student.model" in plan.values and \
                not plan.user_set("iterations"):
            plan.set("iterations", 2, "two iterations hold the recipe's gain (+1.8, then +0.3)")
            plan.set("student.passes", SCRATCH_PASSES[0], "the airbench recipe's student 1")
            plan.set("students", [{}, {"passes": SCRATCH_PASSES[1]}],
                     "the airbench recipe's student 2 is longer")
            plan_warmups(plan, SCRATCH_PASSES)
        return
    budget = AIM * 60 * plan.budget_minutes
    report = report_seconds(plan, rates)
    teacher = teacher_seconds(plan, rates, plan.teacher_size(), plan.value("teacher.epochs"))
    for count in [plan.value("iterations")] if plan.user_set("iterations") else (2, 1):
        passes = student_passes(plan, rates, budget - teacher - report, count)
        if count == 1 or all(p >= MIN_PASSES[family] for p in passes):
            break
    plan.set("iterations", count, "two students each long enough fit the budget" if count == 2
             else "one student: two would each get too few passes in the budget")
    plan.set("student.passes", round(passes[0], 2), "what the budget leaves, at this "
             "machine's measured speed")
    if count > 1:
        plan.set("students", [{}] + [{"passes": round(p, 2)} for p in passes[1:]],
                 "the later students 4/3 as long: they learn from better labels")
    plan_warmups(plan, passes[:count])
    plan.seconds["iter0-teacher"] = teacher
    for k in range(1, count + 1):
        plan.seconds[f"iter{k}/pseudo-labels"] = labeling_seconds(plan, rates, k)
        plan.seconds[f"iter{k}/student"] = student_seconds(plan, rates, passes[k - 1])
    plan.seconds["report"] = report
    if passes[0] < MIN_PASSES[family]:
        log.warning("warning: the budget leaves the student %.2f passes, under the %g a student "
                    "%s needs to gain what it can from the pseudo-labels; "
                    "a larger budget would", passes[0], MIN_PASSES[family],
                    "from scratch" if family == "scratch" else "from pretrained weights")
    total = sum(plan.seconds.values()) / 60
    if total > plan.budget_minutes:
        log.warning("warning: the smallest plan needs about %.0f min, over the %g min budget "
                    "(the teacher and labeling %d unlabeled images alone take %.0f min)",
                    total, plan.budget_minutes, plan.facts.pile,
                    (teacher + plan.seconds["iter1/pseudo-labels"]) / 60)


def plan_warmups(plan: Plan, passes) -> None:
    """A from-scratch student's warm-up, lengthened to MIN_WARMUP_STEPS where its passes
    are few (the first student's in ``student``, the later ones' in ``students``)."""
    if "student.warmup_epochs" not in plan.values:
        return  # the user's, or a pretrained student's default
    student = {key: plan.value(f"student.{key}") for key in
               ("warmup_epochs", "epochs", "batch_size", "unlabeled_ratio")}
    warmups = [warmup_epochs(student, p, plan.facts.pile) for p in passes]
    if warmups[0] != student["warmup_epochs"]:
        plan.set("student.warmup_epochs", warmups[0], f"at least {MIN_WARMUP_STEPS} warm-up "
                 "steps: a shorter warm-up to lr 0.8 made a short student collapse")
    if any(w != warmups[0] for w in warmups[1:]):  # a later student's own, where it differs
        plan.set("students", [{**entry, "warmup_epochs": w} if w != warmups[0] else entry
                              for entry, w in zip(plan.value("students"), warmups)],
                 plan.reasons.get("students", "") + f"; at least {MIN_WARMUP_STEPS} warm-up "
                 "steps each")


def warmup_epochs(student: dict, passes: float, pile: int) -> float:
    """The planned warm-up (in epochs), or MIN_WARMUP_STEPS' worth when that is longer: a
    student of ``passes`` over ``pile`` pseudo-labeled images, in ``student``'s epochs and
    batches (at most half its epochs: the cosine decay needs the other half)."""
    steps = passes * max(pile, 1) / (student["batch_size"] * student["unlabeled_ratio"])
    needed = math.ceil(100 * MIN_WARMUP_STEPS * student["epochs"] / max(steps, 1)) / 100
    return min(student["epochs"] / 2, max(student["warmup_epochs"], needed))


def teacher_seconds(plan: Plan, rates: Rates, size: int, epochs: int,
                    model: str | None = None) -> float:
    """The teacher's training and evaluations (none for a finished ``teacher_run``)."""
    facts, model = plan.facts, model or plan.teacher_model()
    if plan.teacher:
        return 0.0
    train = rates.training(model, size, 3, plan.value("teacher.batch_size"))
    infer = rates.inference(model, size, 3)
    return (STEP_OVERHEAD + epochs * facts.labeled / train
            + (facts.test + epochs * facts.val) / infer)


def pile_seconds(plan: Plan, rates: Rates, size: int, flip: bool = False,
                 model: str | None = None) -> float:
    """The teacher labeling the pile at ``size`` px (twice over: ``flip``)."""
    passes = 2 if flip else 1
    return passes * plan.facts.pile / rates.inference(model or plan.teacher_model(), size, 3)


def _student(plan: Plan) -> tuple[str, int, int, dict]:
    return (plan.value("student.model"),
            plan.value("student.image_size"), plan.value("student.in_chans"),
            plan.value("student.model_options"))


def labeling_seconds(plan: Plan, rates: Rates, k: int) -> float:
    if k == 1:
        return pile_seconds(plan, rates, plan.teacher_size(), plan.value("pseudo_label.flip"))
    model, size, chans, options = _student(plan)
    return plan.facts.pile / rates.inference(model, size, chans, options)


def student_seconds(plan: Plan, rates: Rates, passes: float) -> float:
    facts = plan.facts
    model, size, chans, options = _student(plan)
    ratio = plan.value("student.unlabeled_ratio")
    batch = plan.value("student.batch_size") * (1 + ratio)
    train = STUDENT_STEP * rates.training(model, size, chans, batch, options)
    infer = rates.inference(model, size, chans, options)
    epochs = plan.value("student.epochs")
    trained = passes * facts.pile * (1 + ratio) / ratio
    return STEP_OVERHEAD + trained / train + (facts.test + epochs * facts.val) / infer


def student_passes(plan: Plan, rates: Rates, seconds: float, count: int) -> list[float]:
    """Passes of ``count`` students (3:4 between the first and the later ones) filling
    ``seconds`` with their labeling (the first labeling is the teacher's)."""
    weights = [3.0] + [4.0] * (count - 1)
    labeling = sum(labeling_seconds(plan, rates, k) for k in range(1, count + 1))
    per_pass = student_seconds(plan, rates, 1.0) - student_seconds(plan, rates, 0.0)
    fixed = student_seconds(plan, rates, 0.0)
    if per_pass <= 0:  # no unlabeled images: the loader will say so
        return [1.0] * count
    left = seconds - labeling - count * fixed
    return [max(0.05, left * w / sum(weights) / per_pass) for w in weights]


def report_seconds(plan: Plan, rates: Rates) -> float:
    """The report's corruption test, fitted into REPORT_SHARE (fewer images, or none)."""
    facts = plan.facts
    if not plan.value("corruptions") or not facts.test:
        return 0.0
    teacher = rates.inference(plan.teacher_model(),
                              plan.teacher_size(), 3)
    model, size, chans, options = _student(plan)
    student = rates.inference(model, size, chans, options)
    models = 1 + (plan.value("iterations") or 2)
    per_image = CORRUPTED * (1 / teacher + (models - 1) / student)
    images = plan.value("corruption_images") or facts.test
    share = REPORT_SHARE * 60 * plan.budget_minutes
    if images * per_image > share and not plan.user_set("corruption_images"):
        images = int(share / per_image) // 100 * 100
        if images < MIN_CORRUPTION_IMAGES:
            plan.set("corruptions", False, f"the corruption test would not fit "
                     f"{REPORT_SHARE:.0%} of the budget")
            return 0.0
        plan.set("corruption_images", images, f"as many test images as fit {REPORT_SHARE:.0%} "
                 "of the budget")
    return images * per_image


def planned_config(given: dict[str, Any]):
    """(the config a self-train run with the user's ``given`` values runs with, the plan
    that chose its unset values)."""
    from .config import SelfTrainConfig, build

    plan = make_plan(given)
    config = build(SelfTrainConfig, plan.merged())
    return config, plan


# --- a run with a budget: the plan on disk, and planning again before each student ---------

PLAN_YAML, PLAN_JSON = runs.PLAN_FILES


def save(run: Path, plan: Plan, config) -> None:
    """plan.yaml (the config with the plan's reasons) and plan.json (what the run plans
    again from: the budget, the keys the plan set, the seconds planned per step)."""
    from . import timings
    from .config import to_dict

    runs.write_text(run / PLAN_YAML, annotated_yaml(to_dict(config), plan))
    if plan.rates is not None and plan.rates.spent:  # the budget's clock ran while it measured
        timings.add(run, run / "plan", plan.rates.spent)
    runs.write_json(run / PLAN_JSON, {"budget_minutes": plan.budget_minutes,
                                      "planned": sorted(plan.values),
                                      "facts": dataclasses.asdict(plan.facts),
                                      "seconds": plan.seconds})


def saved(run: Path) -> dict:
    path = run / PLAN_JSON
    return runs.read_json(path) if path.is_file() else {}


def replan_student(config, run: Path, k: int) -> dict[str, float]:
    """Student ``k``'s length from the time the budget has left, once its pseudo-labels are
    made (a run whose plan set the students' passes): the changes to its config, else
    nothing."""
    info = saved(run)
    if not _plans_students(info):
        return {}
    passes, seconds, speed, fixed = _fitted_student(config, run, k, info, labeled=True)
    info["seconds"][f"iter{k}/student"] = seconds
    runs.write_json(run / PLAN_JSON, info)
    log.info("plan: student %d gets %.2f passes, %.1f min of training at %.0f images/s (and "
             "%.1f of evaluation)", k, passes, (seconds - fixed) / 60, speed, fixed / 60)
    if "student.warmup_epochs" not in info["planned"]:
        return {"passes": passes}
    from noisystudent.labels.directory import read_summary

    from .layout import SelfTrainLayout

    student = config.student_config(k, "pending")
    kept = read_summary(SelfTrainLayout(run, config.teacher_run).pseudo_labels(k))["kept"]
    warmup = warmup_epochs({"warmup_epochs": SCRATCH_STUDENT["warmup_epochs"],
                            "epochs": student.epochs, "batch_size": student.batch_size,
                            "unlabeled_ratio": student.unlabeled_ratio}, passes, kept)
    return {"passes": passes, "warmup_epochs": warmup}


def worth_another(config, run: Path, k: int) -> bool:
    """Whether iteration ``k`` (> 1) still pays in the time left: its labeling and a student
    of at least MIN_PASSES. False drops it, and the iterations after it."""
    info = saved(run)
    if not _plans_students(info) or k < 2:
        return True
    passes = _fitted_student(config, run, k, info, labeled=False)[0]
    family = "scratch" if config.student_config(k, "pending").pretrained == "none" \
        else "pretrained"
    if passes >= MIN_PASSES[family]:
        return True
    log.warning("plan: iteration %d dropped: the budget leaves its student %.2f passes, under "
                "the %g a student %s needs", k, passes, MIN_PASSES[family],
                "from scratch" if family == "scratch" else "from pretrained weights")
    info["dropped"] = k
    runs.write_json(run / PLAN_JSON, info)
    return False


def _plans_students(info: dict) -> bool:
    return bool(info.get("budget_minutes")) and "student.passes" in info.get("planned", ())


def _fitted_student(config, run: Path, k: int, info: dict,
                    labeled: bool) -> tuple[float, float, float, float]:
    """(passes, seconds, images/s, seconds of evaluation) of student ``k`` filling its share
    of the time left. ``labeled``: its pseudo-labels exist; otherwise its labeling, by the
    previous student, is estimated from the last one and counted too. The machine's speed
    comes from the run's finished steps (the previous student's own), else from the plan's
    measurement of the bare step times STUDENT_STEP."""
    from noisystudent.labels.directory import read_summary

    from . import timings
    from .layout import SelfTrainLayout

    layout = SelfTrainLayout(run, config.teacher_run)
    student = config.student_config(k, "pending")
    teacher = config.teacher_config()
    last = k if labeled else k - 1  # the last labeling done
    summary = read_summary(layout.pseudo_labels(last))
    pile, labeled_images = summary["kept"] or 1, summary["unlabeled_images"] or 1
    speed = _observed_speed(layout.student(k - 1), student) if k > 1 else None
    # Without a finished student's speed, the rates are measured again: a cached one can be
    # hours old, and a shared machine drifts (its students ran at 470 and at 630 images/s in
    # two sessions on one CPU). The seconds spent count toward the budget.
    rates = Rates(config.device, config.precision, fresh=speed is None)

    def inference(model_config) -> float:
        return rates.inference(model_config.model, model_config.image_size,
                               model_config.in_chans, model_config.model_options)

    # Decoding: what labeling took beyond the labeling model's measured inference (0 for
    # images already in memory). A student streaming the kept images decodes each per pass.
    labeler = teacher if last == 1 else config.student_config(last - 1, "pending")
    took = timings.read(run).get(timings.step_name(run, layout.pseudo_labels(last))) or 0.0
    decode = max(0.0, took / labeled_images - 1 / inference(labeler))
    trained = pile * (1 + student.unlabeled_ratio) / student.unlabeled_ratio
    if speed is not None:  # the previous student's own speed, its decoding included
        per_pass = trained / speed
    else:  # the bare step's measured speed, times the student step's overhead
        speed = STUDENT_STEP * rates.training(student.model, student.image_size,
                                              student.in_chans, student.images_per_step,
                                              student.model_options)
        per_pass = trained / speed + pile * decode
    facts = info.get("facts", {})
    fixed = STEP_OVERHEAD + (facts.get("test", 0) + student.epochs * facts.get("val", 0)) \
        / inference(student)
    if rates.spent:  # measured before the clock is read
        timings.add(run, run / "plan", rates.spent)
    labelings = range(k + (1 if labeled else 0), config.iterations + 1)
    later = range(k + 1, config.iterations + 1)
    left = (AIM * 60 * info["budget_minutes"] - sum(timings.read(run).values())
            - info["seconds"].get("report", 0.0)
            - len(labelings) * labeled_images * (decode + 1 / inference(student))
            - fixed * (1 + len(later)))
    weights = [3.0 if j == 1 else 4.0 for j in range(k, config.iterations + 1)]
    passes = round(max(0.05, left * weights[0] / sum(weights) / per_pass), 2)
    return passes, fixed + passes * per_pass, trained / per_pass, fixed


def replan_report(config, run: Path):
    """The config the report runs with: under a budget whose plan chose the corruption test's
    size, fewer corrupted images (or none) when the students left less time than planned."""
    from . import timings

    info = saved(run)
    planned = info.get("seconds", {}).get("report")
    if not info.get("budget_minutes") or not planned or not config.corruptions or \
            "corruption_images" not in info.get("planned", ()):
        return config
    left = 60 * info["budget_minutes"] - sum(timings.read(run).values())
    if left >= planned:
        return config
    images = int(config.corruption_images * max(0.0, left) / planned) // 100 * 100
    log.info("plan: %d corrupted test images instead of %d, to end within the budget",
             images, config.corruption_images)
    if images < MIN_CORRUPTION_IMAGES:
        return config.model_copy(update={"corruptions": False})
    return config.model_copy(update={"corruption_images": images})


def _observed_speed(step: Path, config) -> float | None:
    """Training images/s a finished step measured (its metrics.jsonl), when it trained the
    same model at the same size as ``config``."""
    log_path, info_path = step / runs.METRICS_LOG, step / runs.MODEL_INFO
    if not (log_path.is_file() and info_path.is_file()):
        return None
    info = runs.read_json(info_path)
    if info.get("model") != config.model or info.get("input", {}).get("size") != \
            config.image_size:
        return None
    speeds = [row["images_per_s"] for row in runs.read_jsonl(log_path) if "images_per_s" in row]
    return statistics.median(speeds) if speeds else None


# --- printing -------------------------------------------------------------------------------

def annotated_yaml(config_values: dict[str, Any], plan: Plan) -> str:
    """The config as YAML, each planned value with its reason and each value the user set
    marked, headed by what the plan saw."""
    import yaml

    lines = [f"# plan: {plan.facts.describe()}"]
    if plan.budget_minutes is not None:
        total = sum(plan.seconds.values()) / 60
        lines.append(f"# plan: budget {plan.budget_minutes:g} min, planned {total:.1f} min: "
                     + ", ".join(f"{k} {v / 60:.1f}" for k, v in plan.seconds.items()))
        if plan.rates is not None:
            lines.append(f"# plan: {plan.rates.machine()}")
    given = flat_keys(plan.given)
    section = ""
    for line in yaml.safe_dump(config_values, sort_keys=False).splitlines():
        stripped = line.lstrip()
        key = stripped.split(":", 1)[0] if ":" in stripped and not stripped.startswith("-") \
            else None
        if key is None:
            lines.append(line)
            continue
        if line == stripped:
            section = key if stripped.endswith(":") and key in _SECTIONS else ""
            dotted = key
        else:
            dotted = f"{section}.{key}" if section else key
        if dotted in plan.reasons:
            line += f"  # plan: {plan.reasons[dotted]}"
        elif dotted in given:
            line += "  # set by you"
        lines.append(line)
    return "\n".join(lines) + "\n"
