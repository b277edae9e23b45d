"""Generator zoo: GAN models, training and sampling into fake corpora.

Entry points: ``list_generators`` / ``create_generator`` / ``get_family`` (the registry),
``train_gan`` (a resumable run folder with checkpoint, stats and plots; the step contract for
new families is in ``generators.trainer``), ``GeneratorRun`` (a run folder's one reader and
writer), ``sample_images`` (seed-named PNGs +
manifest.jsonl), ``load_checkpoint`` / ``checkpoint_sha256``, and ``generators.quality``
(Frechet distance, KID, precision/recall on feature arrays). This package never imports
``forensics``.
"""

from .checkpoint import CheckpointError, checkpoint_sha256, load_checkpoint, save_checkpoint
from .registry import GanPair, create_generator, get_family, list_generators, register_generator
from .run_folder import GeneratorRun, read_stats
from .sampling import sample_images
from .trainer import TrainResult, train_gan

__all__ = [
    "CheckpointError",
    "GanPair",
    "GeneratorRun",
    "checkpoint_sha256",
    "create_generator",
    "get_family",
    "list_generators",
    "load_checkpoint",
    "read_stats",
    "register_generator",
    "sample_images",
    "save_checkpoint",
    "TrainResult",
    "train_gan",
]
