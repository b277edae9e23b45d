"""Data-parallel training under ``torchrun``: DistributedDataParallel with batch norm statistics
synchronised across ranks, on the CPU (gloo) as on GPUs.

Each rank trains on its share of every batch; gradients are averaged by DDP and batch norm
normalises with the statistics of the whole batch, so S ranks take the steps one process
takes with that batch (up to the order of float sums). torch's ``SyncBatchNorm`` refuses CPU
tensors, so the synchronised forward here is written with an all-reduce whose backward
all-reduces the gradients in turn. It serves both ``nn.BatchNorm2d`` and timm's
``BatchNormAct2d`` (normalisation, then its dropout and activation), and it is set on the
instances for the training only: the classes, and so the parameter names of the bundle, stay
as they are.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from crashsafe.torchrun import all_gather, world
from forensics.ranks import interleave

__all__ = ["data_parallel", "shared_map"]

T = TypeVar("T")


def shared_map(function: Callable[[Sequence[T]], Sequence[Any]], items: Sequence[T]) -> list:
    """``function(items)``, each rank computing it on every rank-th item: every rank gets the
    whole result, in order."""
    rank, size = world()
    return interleave(all_gather(list(function(items[rank::size]))))


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the gradients over the ranks in turn."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _synced_forward(norm: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm of ``x`` with the mean and (biased) variance of the whole
    batch across ranks; the running statistics move as one process's would."""
    dims = [0, *range(2, x.dim())]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    values = x.float()
    count = torch.tensor([x.numel() // x.shape[1]], dtype=values.dtype, device=x.device)
    sums = _SumOverRanks.apply(torch.cat([values.sum(dims), count]))
    total = sums[-1]
    mean = sums[:-1] / total
    centred = values - mean.view(shape)
    variance = _SumOverRanks.apply((centred * centred).sum(dims)) / total
    out = centred * torch.rsqrt(variance + norm.eps).view(shape)
    if norm.affine:
        out = out * norm.weight.view(shape) + norm.bias.view(shape)
    if norm.track_running_stats:
        with torch.no_grad():
            norm.num_batches_tracked.add_(1)
            momentum = (1.0 / float(norm.num_batches_tracked) if norm.momentum is None
                        else norm.momentum)
            norm.running_mean.lerp_(mean.detach().to(norm.running_mean.dtype), momentum)
            unbiased = variance.detach() * (total / (total - 1).clamp(min=1))
            norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), momentum)
    out = out.to(x.dtype)
    if hasattr(norm, "act"):  # timm's BatchNormAct2d: dropout and activation follow
        out = norm.act(norm.drop(out))
    return out


def _forward_synced(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if self.training:
        return _synced_forward(self, x)
    return type(self).forward(self, x)


@contextlib.contextmanager
def data_parallel(network: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The module to train ``network`` through: itself in one process; across ranks, a
    DistributedDataParallel of it whose batch norms see the whole batch (undone on exit)."""
    if world()[1] == 1:
        yield network
        return
    norms = [m for m in network.modules() if isinstance(m, _BatchNorm)]
    for norm in norms:
        norm.forward = types.MethodType(_forward_synced, norm)
    try:
        yield DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    finally:
        for norm in norms:
            del norm.forward
