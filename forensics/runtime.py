"""Process-wide settings for CPU inference and training: torch's thread count and the C allocator.

Both are global to the process, so the entry points (the CLI, the app, the benchmarks) apply
them once at start-up, never a library call in the middle of someone else's program.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["set_threads", "keep_freed_memory", "keeps_freed_memory"]

# mallopt parameters of glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# Blocks up to this size come from the heap and are reused when freed, instead of being mapped
# afresh and faulted in page by page; the heap returns memory to the system once this much
# lies free at its top.
_MMAP_THRESHOLD = 256 << 20
_TRIM_THRESHOLD = 512 << 20


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in torch (None: leave torch's default, every usable CPU)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed blocks of up to 256 MB instead of unmapping them.

    Each layer of a CNN allocates its output afresh; past glibc's largest mmap threshold
    (32 MB) every such block is a new mapping, and its pages fault in one by one. Measured on
    2 cores: npr_resnet on 128 px tiles ran 97 tiles/s with this (at any batch of 4 to 16)
    against 59 without (batches of 16), Lite0 on 256 px tiles 56 against 16.5 (batches of
    32). Freed memory of up to 512 MB may stay with the process for reuse.

    All threads also share one malloc arena, so what one thread frees another reuses: images
    decoded on worker threads had left Pillow's decode buffer (256 MB for 64 MP) in a
    thread's own arena, out of reach of the scoring thread: a 64 MP CNN scan peaked at
    1.61 GB with an arena a thread, 1.55 GB with one (and took the same 13-14 s). Returns
    whether the settings took (only with glibc; elsewhere they do nothing).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows, musl)
        return False
    return all(bool(mallopt(key, value)) for key, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
        (_M_ARENA_MAX, 1)))


def keeps_freed_memory() -> bool:
    """Whether ``keep_freed_memory`` has been applied in this process."""
    return keep_freed_memory.cache_info().currsize > 0 and keep_freed_memory()
