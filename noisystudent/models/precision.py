"""``precision: auto`` for training on a CPU: the faster of fp32 and bf16 autocast for the model,
input and batch at hand, measured once and cached.

Which dtype trains faster depends on the model as much as on the CPU: on an AVX-512 BF16 Zen 4
a dense 3x3 convolution runs on the bf16 dot-product units (CIFAR ResNet-20 @32: 1,064 images/s
in bf16 against 607 in fp32) and a depthwise one does not (Lite0 @32: 366 against 896). So on
a CPU with bf16 instructions (AVX-512 BF16 or AMX) the first run of a (model, input, batch)
times a few steps of each and keeps bf16 where it is at least 10% faster; later runs read
the answer from ``$NOISYSTUDENT_CACHE/precision.json`` (default ``~/.cache/noisystudent``),
keyed by the CPU's name, torch version, thread count, model, input and batch, so a run and
its resume train in the same dtype. A CPU without bf16 instructions trains in fp32 without
measuring (bf16 is emulated there: Lite0 at 32 px trains at 33 images/s in bf16 against 126
in fp32 on a Zen 3, BENCHMARKS.md "CPU kind: AVX2").
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from noisystudent.core import distributed
from noisystudent.core.device import has_bf16_units, resolve_precision

from . import speed
from .build import create_model, keep_spatial_map

log = logging.getLogger(__name__)

CACHE_FILE = "precision.json"
# bf16 is kept only when it trains at least this much faster: it rounds activations, and a
# near tie (Lite0 @128 measured 54 against 52 images/s) is measurement noise, not a reason.
BF16_MIN_SPEEDUP = 1.1
# The measured batch: large enough for the per-image rate of the real step, small enough that
# a slow model (Lite0 @96 fp32: ~100 images/s) measures in seconds.
MAX_MEASURED_BATCH = 128
# Each dtype is timed this many times, interleaved, and its best kept: the answer is cached for
# good, and a burst of other work beside one probe (a Xeon with AMX timed cifar_airbench_s at
# 756 images/s fp32 against 608 bf16, where alone it trains at 1,542 against 3,213) would
# otherwise fix the slower dtype for every later run.
PROBE_ROUNDS = 2


def measured_training_dtype(build: callable, key: dict,
                            input_shape: tuple[int, ...]) -> torch.dtype | None:
    """The faster of fp32 (None) and bf16 for the model ``build()`` returns, from the cache or
    measured now. ``key`` names the model and input (its JSON is the cache key)."""
    full_key = speed.machine_key(**key, batch=input_shape[0])
    path = speed.cache_file(CACHE_FILE)
    cache = speed.read_cache(path)
    if full_key not in cache:
        rates = {"fp32": 0.0, "bf16": 0.0}
        state = torch.random.get_rng_state()  # measuring must not move the run's random stream
        for _ in range(PROBE_ROUNDS):
            for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                rates[name] = max(rates[name], speed.training_rate(build(), input_shape, dtype))
        torch.random.set_rng_state(state)
        best = "bf16" if rates["bf16"] >= BF16_MIN_SPEEDUP * rates["fp32"] else "fp32"
        cache[full_key] = {"dtype": best, "images_per_s": {k: round(v, 1)
                                                            for k, v in rates.items()}}
        log.info("precision auto: %s trains in %s here (%s images/s fp32, %s bf16; cached in %s)",
                 key.get("model"), best, f"{rates['fp32']:,.0f}", f"{rates['bf16']:,.0f}", path)
        speed.write_cache(path, cache)
    return torch.bfloat16 if cache[full_key]["dtype"] == "bf16" else None


def training_precision(config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a TrainConfig's stage trains in (None = fp32). 'auto' on a CPU with
    bf16 instructions is measured for the config's model and input (module docstring);
    elsewhere ``device.resolve_precision`` decides. Under torchrun rank 0 measures and every
    rank trains in its answer."""
    if not measures_training_dtype(config.precision, device):
        return resolve_precision(config.precision, device, training=True)
    return distributed.decided_on_main(lambda: auto_training_dtype(
        config.model, config.image_size, config.in_chans, config.model_options,
        config.images_per_step, small_image=config.small_image,
        drop_path_rate=config.drop_path_rate))


def measures_training_dtype(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` picks the training dtype by measuring it: 'auto' on a CPU with
    bf16 instructions (where either dtype can be the faster one, by model)."""
    return precision == "auto" and device.type == "cpu" and has_bf16_units()


def auto_training_dtype(model: str, image_size: int, in_chans: int, options: dict | None,
                        batch: int, *, small_image: int = 0,
                        drop_path_rate: float = 0.0) -> torch.dtype | None:
    """What ``precision: auto`` trains ``model`` in on this CPU with bf16 instructions (None =
    fp32), from the cache or measured now; the plan asks it too, so that it times the step in
    the dtype the stage will train in, and the stage then reads the same cached answer."""
    def build() -> nn.Module:
        net = create_model(model, 10, drop_path_rate=drop_path_rate, in_chans=in_chans,
                           options=options)
        return keep_spatial_map(net, small_image)

    key = {"model": model, "options": options or {}, "image_size": image_size,
           "in_chans": in_chans, "small_image": small_image}
    shape = (min(batch, MAX_MEASURED_BATCH), in_chans, image_size, image_size)
    return measured_training_dtype(build, key, shape)
