"""Generator zoo: GAN models, training and sampling into fake corpora.

Entry points: ``list_generators`` / ``create_generator`` (the registry), ``train_gan`` (a run
folder with checkpoint, stats and plots), ``sample_images`` (seed-named PNGs + manifest.jsonl),
``load_checkpoint`` / ``checkpoint_sha256``. This package never imports ``forensics``.
"""

from .checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint
from .registry import GanPair, create_generator, list_generators, register_generator
from .sampling import sample_images
from .trainer import read_stats, train_gan

__all__ = [
    "GanPair",
    "checkpoint_sha256",
    "create_generator",
    "list_generators",
    "load_checkpoint",
    "read_stats",
    "register_generator",
    "sample_images",
    "save_checkpoint",
    "train_gan",
]
