"""Data parallelism with PyTorch's own engine: ``torchrun ... -m noisystudent <command>``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK and the rendezvous; the CLI calls ``setup()``,
which joins the process group (NCCL on GPUs, gloo on CPUs). Every torchrun launch joins it, one
process included, so a single GPU runs the same collectives as many. Without torchrun every
helper here is a no-op, so the rest of the code reads the same either way.

Semantics: ``batch_size`` is the *global* batch, split evenly across processes, so the learning
rate and schedule mean the same thing for any number of processes. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .errors import UserError

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "WORLD_SIZE" in os.environ


def setup() -> None:
    """Join the process group when launched by torchrun (any number of processes)."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group("gloo")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """In a process group: DDP, sharding and collectives run (a group of one included)."""
    return dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[local_rank()])
        else:
            dist.barrier()


def collective_device() -> torch.device:
    """Where collective tensors live: NCCL moves GPU tensors only, gloo CPU tensors."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around the trainable model (frozen teachers are never wrapped)."""
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def my_share(length: int) -> tuple[int, int]:
    """This rank's contiguous [start, stop) of ``length`` items, as even as possible."""
    base, extra = divmod(length, world_size())
    start = rank() * base + min(rank(), extra)
    return start, start + base + (rank() < extra)


def check_divisible(batch_size: int, what: str = "batch_size") -> None:
    if batch_size % world_size():
        raise UserError(f"{what} {batch_size} is the global batch and must divide evenly "
                        f"over {world_size()} processes")


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Averages across ranks; throughput adds up."""
    if not active():
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                          device=collective_device())
    dist.all_reduce(values)
    total = dict(zip(keys, values.tolist()))
    return {k: total[k] if k == "images_per_s" else total[k] / world_size() for k in keys}


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over the ranks (the tensor itself for one process)."""
    if not active():
        return tensor
    total = tensor.to(collective_device())
    dist.all_reduce(total)
    return total.to(tensor.device)


def exclusive_prefix(tensor: torch.Tensor) -> torch.Tensor:
    """Per element, the sum of the ranks before this one (zeros on rank 0 and alone)."""
    if not active():
        return torch.zeros_like(tensor)
    parts = [torch.empty_like(tensor, device=collective_device()) for _ in range(world_size())]
    dist.all_gather(parts, tensor.to(collective_device()))
    before = torch.stack(parts[:rank()]).sum(0) if rank() else torch.zeros_like(parts[0])
    return before.to(tensor.device)


def decided_on_main(decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 alone and its answer (a small picklable value) given to every
    rank, so that all ranks act on one decision (a measured dtype, a re-planned length)."""
    answer = [decide() if is_main() else None]
    if active():
        dist.broadcast_object_list(answer, src=0)
    return answer[0]


def merge_dicts(mine: dict) -> dict:
    """Every rank's dict merged into one, on every rank (a small one: pickled)."""
    if not active():
        return mine
    everyone: list = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    return {key: value for theirs in everyone for key, value in theirs.items()}


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows, in rank order (the ranks' shares may differ by one)."""
    if not active():
        return tensor
    device = collective_device()
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([len(tensor)], device=device))
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(tensor.device)
