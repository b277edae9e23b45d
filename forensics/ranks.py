"""This process's place among ``torchrun`` processes, for commands that shard images by rank.

``torchrun --nproc_per_node N [--nnodes M ...] forensics scan|evaluate|robustness ...`` starts
the same command N times per node; each process scores the images ``rank::size`` and rank 0
writes what one process would have written. Without torchrun there is one rank of one.
Ranks talk over gloo: they exchange only small objects (rows of scores, flags).
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Sequence, TypeVar

__all__ = ["Ranks", "interleave"]

T = TypeVar("T")

# A rank that finishes early waits for the slowest; shards can run for hours.
_TIMEOUT = datetime.timedelta(days=2)


class Ranks:
    """Rank and size from torchrun's environment; joins (and later leaves) the gloo group."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", 0))
        self.size = int(os.environ.get("WORLD_SIZE", 1))
        self._owns_group = False
        if self.size > 1:
            import torch
            import torch.distributed as dist

            self._dist = dist
            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=_TIMEOUT)
                self._owns_group = True
            if torch.cuda.is_available():  # one GPU per rank of a node for CUDA detectors
                local_rank = int(os.environ.get("LOCAL_RANK", 0))
                torch.cuda.set_device(local_rank % torch.cuda.device_count())

    def __enter__(self) -> "Ranks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every ``size``-th from ``rank`` on."""
        return list(items[self.rank::self.size])

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return value
        from forensics.data_parallel import from_rank_zero

        return from_rank_zero(value)

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.size == 1:
            return [value]
        from forensics.data_parallel import all_gather

        return all_gather(value)

    def barrier(self) -> None:
        if self.size > 1:
            self._dist.barrier()

    def close(self) -> None:
        if self._owns_group:
            self._dist.destroy_process_group()
            self._owns_group = False


def interleave(shares: Sequence[Sequence[T]]) -> list[T]:
    """Undo ``Ranks.share``: the items in their original order from every rank's share."""
    out: list[T] = []
    for k in range(max((len(s) for s in shares), default=0)):
        out.extend(share[k] for share in shares if k < len(share))
    return out
