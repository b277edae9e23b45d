"""Images sharded by ``torchrun`` rank, for the commands that score them.

``torchrun --nproc_per_node N [--nnodes M ...] forensics scan|evaluate|robustness ...`` starts
the same command N times per node; each process scores the images ``rank::size`` and rank 0
writes what one process would have written. Without torchrun there is one rank of one. The
place and the process group come from ``crashsafe.torchrun``; ranks talk over gloo: they
exchange only small objects (rows of scores, flags).
"""

from __future__ import annotations

import datetime
from typing import Any, Sequence, TypeVar

from crashsafe.torchrun import all_gather, from_rank_zero, join_group, leave_group, local_gpu, place

__all__ = ["Ranks", "interleave"]

T = TypeVar("T")

# A rank that finishes early waits for the slowest; shards can run for hours.
_TIMEOUT = datetime.timedelta(days=2)


class Ranks:
    """Rank and size from torchrun's environment; joins (and later leaves) the gloo group."""

    def __init__(self) -> None:
        here = place()
        self.rank, self.size = here.rank, here.world_size
        self._owns_group = False
        if self.size > 1:
            import torch

            self._owns_group = join_group("gloo", timeout=_TIMEOUT)
            if torch.cuda.is_available():  # one GPU per rank of a node for CUDA detectors
                local_gpu()

    def __enter__(self) -> "Ranks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every ``size``-th from ``rank`` on."""
        return list(items[self.rank::self.size])

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        return value if self.size == 1 else from_rank_zero(value)

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        return [value] if self.size == 1 else all_gather(value)

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self._owns_group:
            leave_group()
            self._owns_group = False


def interleave(shares: Sequence[Sequence[T]]) -> list[T]:
    """Undo ``Ranks.share``: the items in their original order from every rank's share."""
    out: list[T] = []
    for k in range(max((len(s) for s in shares), default=0)):
        out.extend(share[k] for share in shares if k < len(share))
    return out
