"""Data-parallel training under ``torchrun``: joining the process group, DDP wrappers,
rank-aware helpers.

``torchrun --nproc_per_node N forensics zoo train ...`` starts N copies of the same command;
:func:`init_distributed` finds this process's place (``crashsafe.torchrun``) and joins the
process group (gloo on the CPU, NCCL on CUDA, one GPU per process). Without torchrun everything
here is a no-op for a single process, so the trainer has one code path.

Steps written for the trainer see DDP-wrapped nets when N > 1: call them through ``forward``
(so gradients are averaged across ranks), use :func:`unwrap` for copies (EMA) and attributes,
and :func:`no_sync` around a net used while its own weights are not being updated (D during
G's update), as NVlabs' ``ddp_sync`` does.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from crashsafe.runtime import resolve_device
from crashsafe.torchrun import Place, backend_for, join_group, local_gpu, place


def init_distributed(device: str | torch.device = "auto") -> tuple[Place, torch.device]:
    """Join the ``torchrun`` process group if there is one; return this process's place and
    its device (under torchrun with CUDA, ``cuda:LOCAL_RANK``)."""
    here, torch_device = place(), resolve_device(device)
    if not here.is_distributed:
        return Place(), torch_device
    if torch_device.type == "cuda":
        torch_device = local_gpu()
    join_group(backend_for(torch_device))
    return here, torch_device


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
