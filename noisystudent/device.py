"""Where tensors live and in what precision: the device, the autocast dtype, the context."""

from __future__ import annotations

import contextlib

import torch

from . import distributed
from .errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name == "cuda":
        return torch.device("cuda", distributed.local_rank())  # one GPU per torchrun process
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device,
                      training: bool = True) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    'auto': bf16 (fp16 without bf16) on CUDA. On CPUs with AVX-512 BF16, bf16 for inference
    only: measured here (torch 2.14, Zen 5), bf16 autocast made Lite0 inference 1.7x faster
    but its training 1.6x *slower* than fp32 with channels_last, so training stays fp32.
    """
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if training:
        return None
    # Without native bf16 instructions autocast emulates it and runs slower than fp32.
    return torch.bfloat16 if torch.cpu._is_avx512_bf16_supported() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
