"""Data-parallel training under ``torchrun``: process group, DDP wrappers, rank-aware helpers.

``torchrun --nproc_per_node N forensics zoo train ...`` starts N copies of the same command;
:func:`init_distributed` reads ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` from the environment
and joins the process group (gloo on the CPU, NCCL on CUDA, one GPU per process). Without those
variables everything here is a no-op for a single process, so the trainer has one code path.

Steps written for the trainer see DDP-wrapped nets when N > 1: call them through ``forward``
(so gradients are averaged across ranks), use :func:`unwrap` for copies (EMA) and attributes,
and :func:`no_sync` around a net used while its own weights are not being updated (D during
G's update), as NVlabs' ``ddp_sync`` does.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .runtime import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs, plots and shows the progress bar."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | torch.device = "auto") -> tuple[DistributedContext,
                                                                   torch.device]:
    """Join the ``torchrun`` process group if there is one; return the context and the device.

    Under torchrun with CUDA each process takes ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    torch_device = resolve_device(device)
    if world_size <= 1:
        return DistributedContext(), torch_device
    context = DistributedContext(int(os.environ["RANK"]), world_size,
                                 int(os.environ.get("LOCAL_RANK", "0")))
    if torch_device.type == "cuda":
        torch_device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(torch_device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo",
                                init_method="env://")
    return context, torch_device


def shutdown_distributed() -> None:
    """Wait for every rank, then leave the process group (no-op without one)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _DistributedNet(DistributedDataParallel):
    """DDP whose unknown attributes (``z_dim``, ``resolution``, ...) fall through to the net."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DDP when a process group is up and it has trainable weights, else itself."""
    if not dist.is_initialized() or not any(p.requires_grad for p in module.parameters()):
        return module
    return _DistributedNet(module, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(module: nn.Module) -> nn.Module:
    """The net inside a DDP wrapper (or ``module`` itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def no_sync(module: nn.Module) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for a wrapped net: no gradient averaging is prepared for its calls."""
    return module.no_sync() if isinstance(module, DistributedDataParallel) else \
        contextlib.nullcontext()


def all_ranks_true(flag: torch.Tensor) -> bool:
    """Whether a boolean scalar tensor is true on every rank (one collective when distributed)."""
    if dist.is_initialized():
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def mean_over_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise mean of ``values`` over the ranks (the values themselves when alone)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def gather_to_all(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable, kept in memory only), in rank order."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank, so that all ranks take the same decision."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
