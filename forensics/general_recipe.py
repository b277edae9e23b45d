"""The general recipe: a detector for GAN images met in the wild, built from the package's own
data only (orchestration: it uses both the zoo and the detector stack, like the demo).

1. **Sources**: the bundled photographs (``forensics.bundled``, each in its fixed split) and
   any real folders the user adds (train split). Nothing else is read, so no evaluation set can
   leak in; the bundle's card lists every source with its SHA-256.
2. **Simulators**: one upsampler autoencoder per operator (``generators.nets.autoencoder``),
   trained on random native-resolution crops of the train photos.
3. **Aligned pairs** (``forensics.aligned``): native crops of every photo, some resized as an
   editor would (still real), each paired with one simulator's reconstruction of it, both
   given the same JPEG/blur history and stored as PNG.
4. **Detector**: the residual CNN (NPR input, ``npr_resnet``) fitted on the train pairs,
   calibrated and thresholded on the val pairs (photos no train pair comes from).

``build_general_detector`` runs it; ``forensics detector train --recipe general`` calls it, and
its output is the bundle shipped in ``forensics/shipped/general``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crashsafe.images import load_image
from forensics.aligned import HistoryOdds, Maker, Source, write_aligned_pairs
from forensics.bundled import SOURCE_PHOTOS
from forensics.corpus import iter_image_files
from forensics.detectors.base import Detector
from forensics.training import train_detector
from generators.checkpoint import checkpoint_sha256, load_checkpoint
from generators.images import tensor_to_uint8
from generators.registry import get_family
from generators.trainer import train_gan

log = logging.getLogger(__name__)

# Tiles of this side bound the memory of a reconstruction of a large photo crop.
_TILE = 256


@dataclass(frozen=True)
class GeneralRecipe:
    """The recipe's sizes: the shipped detector uses the defaults, the demo a smaller copy."""

    upsamplers: tuple[str, ...] = ("nearest", "bilinear", "convT4", "convT4_blur",
                                   "pixelshuffle", "convT3")
    simulator_steps: int = 600
    crops_per_photo: int = 60
    crop_sizes: tuple[int, int] = (128, 256)
    detector: dict[str, Any] = field(default_factory=lambda: {
        "input": "npr", "backbone": "npr_resnet", "crop_size": 96, "tile_size": 128,
        "batch_size": 32, "epochs": 6, "steps_per_epoch": 60, "pool": "mean"})
    odds: HistoryOdds = HistoryOdds()

    def scaled(self, factor: float) -> GeneralRecipe:
        """A copy with fewer simulator steps, crops and epochs (``factor`` < 1: the demo)."""
        detector = {**self.detector,
                    "epochs": max(1, round(self.detector["epochs"] * factor)),
                    "steps_per_epoch": max(4, round(self.detector["steps_per_epoch"] * factor))}
        return GeneralRecipe(self.upsamplers[:max(2, round(len(self.upsamplers) * factor))],
                             max(10, round(self.simulator_steps * factor)),
                             max(4, round(self.crops_per_photo * factor)), self.crop_sizes,
                             detector, self.odds)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recipe_sources(extra_real: Sequence[str | os.PathLike] = ()) -> list[tuple[Source, Path]]:
    """The bundled photos (their own splits) and every image of the ``extra_real`` folders
    (train), each with the file it was read from."""
    found = [(Source(p.name, p.split, load_image(p.path())), p.path()) for p in SOURCE_PHOTOS]
    for path in iter_image_files(extra_real):
        found.append((Source(f"user_{len(found):04d}", "train", load_image(path)), path))
    return found


def simulator_maker(run: Path) -> tuple[str, Maker]:
    """The simulator's generator name (as its manifests write it) and image -> its
    reconstruction of the image at its own size (on the CPU)."""
    pair, document = load_checkpoint(run)
    network = pair.generator.eval()

    def reconstruct(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = network(x.float() / 127.5 - 1.0, tile=_TILE)
        return tensor_to_uint8(y)[0]

    return get_family(document["name"]).generator_label(document["config"]), reconstruct


def train_simulators(runs: Path, photos: Sequence[Path], recipe: GeneralRecipe, *, seed: int,
                     progress: bool) -> list[Path]:
    """One autoencoder run per upsampler of the recipe, trained on crops of ``photos``."""
    out = []
    for k, upsample in enumerate(recipe.upsamplers):
        out.append(runs / upsample)
        result = train_gan("autoencoder", [str(p) for p in photos], out[-1],
                           steps=recipe.simulator_steps, seed=seed + k, device="cpu",
                           config_overrides={"upsample": upsample}, progress=progress)
        log.info("simulator %s: %s", upsample, result)
    return out


def build_general_detector(out: str | os.PathLike, work: str | os.PathLike, *,
                           recipe: GeneralRecipe = GeneralRecipe(),
                           extra_real: Sequence[str | os.PathLike] = (), seed: int = 0,
                           progress: bool = True) -> Detector:
    """Run the recipe: simulators and aligned pairs in ``work``, the detector bundle in ``out``.

    The bundle's training info records the recipe, every source file with its SHA-256 and
    every simulator's checkpoint SHA-256, and the minutes each stage took.
    """
    work = Path(work)
    started = time.perf_counter()
    sources = recipe_sources(extra_real)
    train_photos = [path for source, path in sources if source.split == "train"]
    runs = train_simulators(work / "simulators", train_photos, recipe, seed=seed,
                            progress=progress)
    simulated = time.perf_counter()
    makers = dict(simulator_maker(run) for run in runs)
    pairs = write_aligned_pairs(work / "pairs", [s for s, _ in sources], makers,
                                crops_per_source=recipe.crops_per_photo,
                                sizes=recipe.crop_sizes, odds=recipe.odds, seed=seed,
                                progress=progress)
    paired = time.perf_counter()
    detector = train_detector("cnn", [pairs], out, params={**recipe.detector,
                                                           "progress": progress},
                              progress=progress)
    detector.training_info_["recipe"] = {
        "name": "general",
        "upsamplers": list(recipe.upsamplers), "simulator_steps": recipe.simulator_steps,
        "crops_per_photo": recipe.crops_per_photo, "crop_sizes": list(recipe.crop_sizes),
        "history_odds": asdict(recipe.odds),
        "sources": [{"name": s.name, "split": s.split, "file": str(path),
                     "sha256": _sha256(path)} for s, path in sources],
        "simulators": {name: checkpoint_sha256(run) for name, run in zip(makers, runs)},
        "minutes": {"simulators": round((simulated - started) / 60, 1),
                    "pairs": round((paired - simulated) / 60, 1),
                    "detector": round((time.perf_counter() - paired) / 60, 1)},
    }
    detector.save(Path(out))
    return detector
