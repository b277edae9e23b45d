"""This process's place among the processes ``torchrun`` started, the process group they
share and the few collectives both libraries use; for the trainers (data parallel) and the
scoring commands (images sharded by rank).

``torchrun --nproc_per_node N [--nnodes M ...] <command>`` starts the same command N times per
node with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in the environment. Without them a process
is rank 0 of 1, nothing here joins anything and every collective returns its input, so callers
keep one code path. Reading the place imports nothing; torch is imported only to join a group,
pick a GPU or exchange values.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["Place", "place", "backend_for", "join_group", "leave_group", "local_gpu", "world",
           "all_gather", "from_rank_zero", "mean_over_ranks"]


@dataclass(frozen=True)
class Place:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes what one process would write (checkpoints, logs, results)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def place() -> Place:
    """This process's place, from torchrun's environment (rank 0 of 1 without torchrun)."""
    return Place(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                 int(os.environ.get("LOCAL_RANK", "0")))


def backend_for(device: torch.device) -> str:
    """The process group backend for tensors on ``device``: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def join_group(backend: str, timeout: datetime.timedelta | None = None) -> bool:
    """Join the torchrun processes' group over ``backend`` unless this process is alone or has
    joined already; returns whether this call joined (and so should :func:`leave_group`)."""
    if not place().is_distributed:
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    return True


def leave_group(*, wait: bool = False) -> None:
    """Leave the process group (no-op without one); with ``wait``, after every rank got here."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def local_gpu() -> torch.device:
    """This process's GPU, made the current one: ``cuda:LOCAL_RANK`` (modulo the GPUs visible,
    for ranks sharing a machine's GPUs)."""
    import torch

    gpu = torch.device("cuda", place().local_rank % torch.cuda.device_count())
    torch.cuda.set_device(gpu)
    return gpu


def world() -> tuple[int, int]:
    """(rank, number of ranks) of the joined process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable, kept in memory only), in rank order, on every rank."""
    size = world()[1]
    if size == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * size
    dist.all_gather_object(gathered, value)
    return gathered


def from_rank_zero(value: Any) -> Any:
    """Rank 0's ``value`` on every rank, so that all ranks take the same decision (or start
    from a state only rank 0's disk may hold)."""
    if world()[1] == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    """Element-wise mean of ``values`` over the ranks (the values themselves when alone); the
    exchange runs on ``device`` (the CPU by default; NCCL needs the rank's GPU)."""
    size = world()[1]
    if size == 1:
        return list(values)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / size).tolist()
