"""How fast this machine trains and runs each model the plan weighs: images/s measured once
per (model, size, channels, options) and cached in ``$NOISYSTUDENT_CACHE/rates.json``
(``models/speed.py`` times the step and keys the cache); a finished student's speed over its
minutes then replaces its model's training rate (``Rates.observed``)."""

from __future__ import annotations

import logging
import os
import time

from noisystudent.core.device import cpu_kind, has_bf16_units, resolve_device
from noisystudent.deploy import labeling
from noisystudent.models import speed

log = logging.getLogger(__name__)

RATES_FILE = "rates.json"
# Bumped when the measurement changes what it measures, so that older cached rates are measured
# again (3: keyed by speed.machine_key; 2: timed in the dtype ``precision: auto`` trains in; 1
# timed fp32 on bf16 CPUs too). Not for the median step: measuring every model again on a
# shared machine moved one-core teachers by its noise (Lite0 @96 labeling 306 -> 217 images/s,
# the photos' 4m teacher from 96 px to 64, 2 points lower), and a finished student mends its
# own model's rate.
RATES_VERSION = 3
INFERENCE_BATCH = 512   # labeling's batch
MAX_TRAINING_BATCH = 512  # a training step is measured on at most this many images
PROBE_BATCH = 64        # the training batch measured when an inference rate is asked first


class Rates:
    """Images/s of training and of inference per (model, size, channels) on this machine,
    measured once (a few steps, after warm-up) and cached in ``$NOISYSTUDENT_CACHE``."""

    def __init__(self, device: str = "auto", precision: str = "auto", fresh: bool = False):
        self.device, self.precision = device, precision
        self.spent = 0.0  # seconds spent measuring: part of the run's time
        self.fresh = fresh  # measure again whatever the cache holds (and cache the new rates)
        self.remeasured: set[str] = set()

    def training(self, model: str, size: int, in_chans: int, batch: int,
                 options: dict | None = None) -> float:
        return self._measured(model, size, in_chans, batch=batch, options=options)[0]

    def inference(self, model: str, size: int, in_chans: int,
                  options: dict | None = None) -> float:
        return self._measured(model, size, in_chans, batch=PROBE_BATCH, options=options)[1]

    def onnx_speedup(self, runtime: str, images: int, labeler: tuple | None = None) -> float:
        """ONNX Runtime's images/s over PyTorch's where it labels ``images`` views with
        ``runtime`` (asked for, or where its export pays: deploy/labeling.py), else 0: what a
        labeling by ``labeler`` (model, size, channels, options) measured here
        (``observed_onnx``), else the dtype's measured low."""
        device, dtype = self.labeling_device()
        if not labeling.usable(runtime, device, images, dtype):
            return 0.0
        if labeler is not None:
            cached = speed.read_cache(speed.cache_file(RATES_FILE)).get(self._key(*labeler))
            if cached and len(cached) > 2:
                return cached[2]
        return labeling.SPEEDUP[labeling.dtype_name(dtype)]

    def observed_onnx(self, labeler: tuple, views_per_s: float) -> float | None:
        """Record ONNX Runtime's ``views_per_s``, as a finished labeling by ``labeler``
        measured it, over the PyTorch inference rate cached for it, as its speedup here: the
        dtype's low priced a Zen 5's labeling of 59,000 images at 3.1 minutes, and it took 1.4
        (3.5x bf16's rate, not 1.6x). The speedup recorded (None: no rate for it is cached)."""
        key, path = self._key(*labeler), speed.cache_file(RATES_FILE)
        cache = speed.read_cache(path)
        if key not in cache:
            return None
        speedup = views_per_s / cache[key][1]
        cache[key] = [*cache[key][:2], speedup]
        speed.write_cache(path, cache)
        return speedup

    def cores(self) -> int:
        """The CPU cores this process may use (the corrupted test images are made on them)."""
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)

    def labeling_device(self):
        """(the device, PyTorch's dtype there) a labeling runs on."""
        from noisystudent.core.device import resolve_precision

        device = resolve_device(self.device)
        return device, resolve_precision(self.precision, device, training=False)

    def machine(self) -> str:
        """What the rates are timed on, and what its kind means for the plan: the same rules
        run on every machine, fed its own speed."""
        import torch

        device = resolve_device(self.device)
        if device.type == "cuda":
            return f"timed on {torch.cuda.get_device_name(device)}"
        kind = cpu_kind()
        name = f"timed on this CPU: {speed.cpu_name()}, {torch.get_num_threads()} threads, {kind}"
        if self.precision != "auto":
            return f"{name}, precision {self.precision} as set"
        if not has_bf16_units():
            return (f"{name}: no bf16 units, so everything trains in fp32 and the same budget "
                    "buys a lower rung of the teacher ladder and shorter students than on a CPU "
                    "with AVX-512 BF16 or AMX")
        return f"{name}: each model trains in the faster of fp32 and bf16 here"

    def observed(self, model: str, size: int, in_chans: int, options: dict | None,
                 training: float) -> bool:
        """Record ``training`` images/s, what a finished step trained at over its minutes, as
        the model's training rate here (where a rate for it is cached): a measurement of
        seconds on a shared machine read 763 images/s for a student whose steps then trained
        1,450-1,600 on the same core. Whether it was recorded."""
        key, path = self._key(model, size, in_chans, options), speed.cache_file(RATES_FILE)
        cache = speed.read_cache(path)
        if key not in cache:
            return False
        cache[key] = [training, *cache[key][1:]]
        speed.write_cache(path, cache)
        return True

    def _key(self, model: str, size: int, in_chans: int, options: dict | None) -> str:
        """The cache's key of a rate: this machine, the precision, the model and its input."""
        return speed.machine_key(resolve_device(self.device), precision=self.precision,
                                 version=RATES_VERSION,
                                 rate=[model, size, in_chans, options or {}])

    def _measured(self, model: str, size: int, in_chans: int, *, batch: int,
                  options: dict | None) -> tuple[float, float]:
        """(training, inference) images/s, from the cache or measured now (once per model
        and input: the training batch of the first question is the one measured)."""
        key, path = self._key(model, size, in_chans, options), speed.cache_file(RATES_FILE)
        cache = speed.read_cache(path)
        if key not in cache or (self.fresh and key not in self.remeasured):
            self.remeasured.add(key)
            start = time.perf_counter()
            cache[key] = measure(model, size, in_chans, batch=min(batch, MAX_TRAINING_BATCH),
                                 options=options, device=resolve_device(self.device),
                                 precision=self.precision)
            self.spent += time.perf_counter() - start
            log.info("plan: measured %s @%d px on this machine: %.0f images/s training, %.0f "
                     "inference (%.0f s; cached in %s)", model, size, *cache[key],
                     time.perf_counter() - start, path)
            speed.write_cache(path, cache)
        return tuple(cache[key][:2])


def measure(model_name: str, size: int, in_chans: int, *, batch: int, options: dict | None,
            device, precision: str) -> tuple[float, float]:
    """(training, inference) images/s of ``model_name`` at ``size`` px, in the precision a
    stage would train and label in: timed steps after a warm-up, on a batch that takes about
    a second (at most the stage's ``batch``: ``speed.sized_rate``)."""
    import torch

    from noisystudent.core.device import resolve_precision
    from noisystudent.models.build import create_model
    from noisystudent.models.precision import auto_training_dtype, measures_training_dtype

    # Time the dtype the stage will train in: on a Zen 5 the airbench student trains in bf16
    # at 1.5x its fp32 speed, and timed in fp32 its plan was 2.7x too short.
    train_dtype = (auto_training_dtype(model_name, size, in_chans, options, batch)
                   if measures_training_dtype(precision, device)
                   else resolve_precision(precision, device, training=True))
    infer_dtype = resolve_precision(precision, device, training=False)
    state = torch.random.get_rng_state()  # measuring must not move the run's random stream
    model = create_model(model_name, 10, in_chans=in_chans, options=options)

    def training(images: int, **timing) -> float:
        return speed.training_rate(model, (images, in_chans, size, size), train_dtype,
                                   device=device, **timing)

    def inference(images: int, **timing) -> float:
        return speed.inference_rate(model, (images, in_chans, size, size), infer_dtype,
                                    device=device, **timing)

    rates = speed.sized_rate(training, batch), speed.sized_rate(inference, INFERENCE_BATCH)
    torch.random.set_rng_state(state)
    return rates
