"""Where tensors live and in what precision: the device, the autocast dtype, the context; and
the host memory a long streamed pass gives back (``release_free_heap``)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
from collections.abc import Callable

import numpy as np
import torch

from . import distributed
from .errors import UserError


def flush_denormals() -> None:
    """Floats too small for full precision (denormals) read and written as zero on the CPU.
    Arithmetic on them is many times slower there: a student's training step on AVX2 kernels
    fell from 1.7 to 0.6 steps/s as its values shrank, and held 1.5-1.6 with this (the Xeon
    held to AVX2, 2026-12-07; BENCHMARKS.md). Set before torch starts its threads, which
    inherit it (and the loader workers, forked). NumPy's float limits are computed first: made
    after, its smallest subnormal reads as zero and it warns so on every command."""
    for dtype in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(dtype)  # cached by NumPy for the process
    torch.set_flush_denormal(True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name == "cuda":
        return torch.device("cuda", distributed.local_rank())  # one GPU per torchrun process
    return torch.device(name)


# The CPU kinds with bf16 units, where bf16 inference pays and training may.
BF16_UNITS = ("AMX", "AVX-512 BF16")


# What torch's kernels are held to when ATEN_CPU_CAPABILITY=avx2 (or lower) is set: then
# the CPU's bf16 units are not used by them, whatever the CPU has.
HELD_TO_AVX2 = ("AVX2", "DEFAULT", "NO AVX")


def cpu_kind() -> str:
    """What this CPU offers for bf16: "AMX" (Intel matrix tiles), "AVX-512 BF16" (bf16 dot
    products, e.g. AMD Zen 4/5), "AVX2" (an x86 CPU with neither: bf16 is emulated), or
    elsewhere the machine's name (e.g. "arm64" on Apple Silicon: bf16 is not measured there,
    so it runs in fp32). An x86 CPU whose kernels are held to AVX2
    (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``) counts as AVX2: a CPU with bf16
    units can so stand in for one without."""
    machine = platform.machine().lower()
    x86 = machine in ("x86_64", "amd64", "i386", "i686", "")
    if x86 and torch.backends.cpu.get_cpu_capability() in HELD_TO_AVX2:
        return "AVX2"
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX-512 BF16"
    return "AVX2" if x86 else machine


def has_bf16_units() -> bool:
    return cpu_kind() in BF16_UNITS


def resolve_precision(precision: str, device: torch.device,
                      training: bool = True) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    'auto': bf16 (fp16 without bf16) on CUDA. On a CPU: inference in bf16 wherever the CPU
    has bf16 instructions (AVX-512 BF16 or AMX; emulated bf16 is slower than fp32), training
    in fp32. A training stage asks ``precision.training_precision`` instead, which measures
    which of the two trains its model faster on a CPU with bf16 instructions.
    """
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if training or not has_bf16_units():
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_heap() -> None:
    """Hand glibc's free heap pages back to the OS. Measured on 1,000,000 streamed images:
    without it, fragmentation from the per-batch activations grew a labeling process from
    0.76 to 1.39 GB; trimming every 50 batches kept it near 0.87 GB at no measurable cost."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
