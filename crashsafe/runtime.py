"""The torch runtime of a process, shared by training, sampling and scoring: device, mixed
precision, CPU threads, random generators and the C allocator.

Importing this module is cheap: torch is imported by the functions that use it, so that entry
points (the CLI, the app, the benchmarks) may set threads and the allocator before they know
whether the command needs torch at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "amp_dtype", "autocast", "grad_scaler", "set_threads",
           "torch_threads", "seed_everything", "torch_rng_state", "set_torch_rng_state",
           "rng_state", "set_rng_state", "keep_freed_memory", "keeps_freed_memory"]

# mallopt parameters of glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# Blocks up to this size come from the heap and are reused when freed, instead of being mapped
# afresh and faulted in page by page; the heap returns memory to the system once this much
# lies free at its top.
_MMAP_THRESHOLD = 256 << 20
_TRIM_THRESHOLD = 512 << 20


# ----------------------------------------------------------------------------- device

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as torch reads it.

    Raises ValueError when a CUDA device is asked for and CUDA is not available.
    """
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but CUDA is not available; "
                         "use device 'auto' (or 'cpu')")
    return resolved


# ----------------------------------------------------------------------------- precision

def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type on ``device``: on CUDA bfloat16 where the GPU supports it (it
    needs no loss scaling and does not overflow), else float16; None on the CPU (float32)."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    """A reusable autocast context in :func:`amp_dtype`'s type; a no-op on the CPU or when not
    ``enabled``."""
    import torch

    dtype = amp_dtype(device) if enabled else None
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """The loss scaler for :func:`autocast`'s precision: active only for float16, whose small
    gradients underflow unscaled; a pass-through otherwise (it then saves an empty state)."""
    import torch

    float16 = enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=float16)


# ----------------------------------------------------------------------------- threads

def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in torch from now on (None: leave torch's setting, by
    default every usable CPU). For the entry points; a library call uses :func:`torch_threads`."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    import torch

    if torch.get_num_threads() != threads:  # a resize costs time
        torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` CPU threads of torch, and restore the count it found on
    exit, so that a library call leaves the process's setting as it was (None: change nothing).
    """
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        set_threads(before)


# ----------------------------------------------------------------------------- random generators

def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def torch_rng_state() -> dict[str, Any]:
    """The state of torch's global generators: ``torch`` (the CPU's) and ``cuda`` (one per
    visible GPU, none without CUDA)."""
    import torch

    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_torch_rng_state(state: dict[str, Any]) -> None:
    """Restore torch's generators from :func:`torch_rng_state`'s tree (the GPUs' states only
    where CUDA is available)."""
    import torch

    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and CUDA) global generators as a tree of
    tensors and numbers (storable with ``crashsafe.tensors.encode_state``)."""
    import numpy as np
    import torch

    version, python_state, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        **torch_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`rng_state`'s tree."""
    import numpy as np

    set_torch_rng_state(state)
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32),
                         numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))


# ----------------------------------------------------------------------------- allocator

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
    1.61 GB with an arena a thread, 1.55 GB with one (and took the same 13-14 s). Global to
    the process, so entry points apply it once at start-up. Returns whether the settings took
    (only with glibc; elsewhere they do nothing).
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
