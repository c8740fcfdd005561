"""How fast a model trains and infers on this machine: images/s of timed steps after a warm-up
(``training_rate``, ``inference_rate``), and the measurements cached once per machine in
``$NOISYSTUDENT_CACHE`` (default ``~/.cache/noisystudent``), each keyed by what it depends on
(``machine_key``: the CPU's name, a GPU's, the torch version and thread count, and what was
measured). ``precision: auto`` (precision.json) and the plan (rates.json) both measure here.

The step is the bare one: forward, cross-entropy, backward and SGD on random channels_last
input, no data loading or noise; a caller that wants the real step scales it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from noisystudent.core import runs
from noisystudent.core.device import HELD_TO_AVX2, autocast
from noisystudent.core.errors import UserError

log = logging.getLogger(__name__)

# Steps per measurement: the first ones touch fresh memory and pick kernels (a process's first
# steps measured 5-15x slower), so they are not timed.
WARMUP_STEPS, TIMED_STEPS = 3, 4
CPU = torch.device("cpu")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_model() -> str:
    """The CPU's family, model and a digest of its flags (``/proc/cpuinfo``): a brand name
    such as "AMD EPYC" names both a Zen 3 with AVX2 and a Zen 4 with AVX-512 BF16."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name in ("cpu family", "model", "flags", "Features") and name not in fields:
                fields[name] = value.strip()
            if not line.strip() and fields:
                break  # the first processor's block is enough
    except OSError:
        return platform.machine()
    flags = fields.get("flags") or fields.get("Features") or ""
    digest = hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12]
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')} " \
        f"flags {digest}"


def machine_key(device: torch.device = CPU, **measured) -> str:
    """A measurement's cache key: this machine (its CPU's name, family, model and flags, and
    the GPU when ``device`` is one; torch's version and threads, and the cores this process
    may use) and what was measured."""
    key = {"cpu": cpu_name(), "cpu_model": cpu_model(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "cores": _usable_cores(), **measured}
    if torch.backends.cpu.get_cpu_capability() in HELD_TO_AVX2:  # another machine's speeds
        key["kernels"] = [torch.backends.cpu.get_cpu_capability(),
                          os.environ.get("ONEDNN_MAX_CPU_ISA", "")]
    if device.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(device)
    return json.dumps(key, sort_keys=True)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # taskset -c 0 is another machine
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # missing or damaged: measure again
        return {}


def write_cache(path: Path, cache: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(cache, indent=1)),
                          every_rank=True)
    except (OSError, UserError) as err:  # a read-only home: measure again next time
        log.warning("could not cache a measurement in %s (%s)", path, err)


def cache_file(name: str) -> Path:
    return runs.cache_root() / name


def training_rate(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype | None,
                  steps: int = TIMED_STEPS, warmup: int = WARMUP_STEPS, *,
                  device: torch.device = CPU, seconds: float = 0.0) -> float:
    """Images/s of the bare training step on random channels_last input of ``input_shape`` =
    (batch, channels, size, size) in autocast ``dtype``: at least ``steps`` timed steps and
    ``seconds``. The model's weights and gradients are left changed: pass a throwaway copy."""
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(input_shape, device=device).to(memory_format=torch.channels_last)
    num_classes = getattr(model, "num_classes", 0) or 10
    y = torch.randint(0, num_classes, (input_shape[0],), device=device)

    def step() -> None:
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _rate(step, input_shape[0], steps, warmup, device=device, seconds=seconds)


def inference_rate(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype | None,
                   steps: int = TIMED_STEPS, warmup: int = WARMUP_STEPS, *,
                   device: torch.device = CPU, seconds: float = 0.0) -> float:
    """Images/s of the model in eval mode without gradients, as ``training_rate`` times it."""
    model = model.to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(input_shape, device=device).to(memory_format=torch.channels_last)

    def step() -> None:
        with torch.no_grad(), autocast(device, dtype):
            model(x)

    return _rate(step, input_shape[0], steps, warmup, device=device, seconds=seconds)


def _rate(step: Callable[[], None], batch: int, steps: int, warmup: int, *,
          device: torch.device, seconds: float) -> float:
    """``batch`` over the median timed step: a shared machine's other tenants and a late
    kernel choice slow some steps 2x, which a mean over a second carries whole (a slowdown
    that lasts the whole second no measurement of seconds escapes: ``Rates.observed``)."""
    for _ in range(warmup):
        step()
    took: list[float] = []
    while len(took) < steps or sum(took) < seconds:
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        took.append(time.perf_counter() - start)
    return batch / statistics.median(took)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sized_rate(rate: Callable[..., float], largest: int) -> float:
    """``rate(batch, steps=..., warmup=..., seconds=...)`` on a batch that takes about a
    second a step, at most ``largest`` (a small model's rate at batch 16 is mostly per-step
    overhead): one step of 16 images sizes the batch, then at least 5 steps and 1 s, their
    median."""
    first = rate(min(16, largest), steps=1, warmup=1)
    return rate(int(min(largest, max(16, first))), steps=5, warmup=1, seconds=1.0)
