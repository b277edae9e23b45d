"""Generator zoo: GAN models, training and sampling into fake corpora.

Entry points: ``list_generators`` / ``create_generator`` / ``get_family`` (the registry),
``train_gan`` (a resumable run folder with checkpoint, stats and plots; the step contract for
new families is in ``generators.trainer``), ``sample_images`` (seed-named PNGs +
manifest.jsonl), ``load_checkpoint`` / ``checkpoint_sha256``, and ``generators.quality``
(Frechet distance, KID, precision/recall on feature arrays). This package never imports
``forensics``.
"""

import importlib
from typing import Any

# Loaded on first use, so that `generators.files` (used by `forensics`) does not import torch.
_EXPORTS = {
    "GanPair": "registry",
    "checkpoint_sha256": "checkpoint",
    "create_generator": "registry",
    "get_family": "registry",
    "list_generators": "registry",
    "load_checkpoint": "checkpoint",
    "read_stats": "trainer",
    "register_generator": "registry",
    "sample_images": "sampling",
    "save_checkpoint": "checkpoint",
    "TrainResult": "trainer",
    "train_gan": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
