"""The embedded default real corpus: random patches of photographs that ship inside packages.

About 18 photographs ship with scikit-image, scikit-learn and matplotlib. Patches at a random
scale, position and horizontal flip make a small real corpus that needs no download. It is a
demo and test corpus: a handful of scenes, not faces, not a benchmark.

Each photo belongs to a fixed split, so no test patch comes from a photo seen in training
(the stereo motorcycle pair counts as one photo).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from crashsafe.corpus_manifest import write_manifest
from crashsafe.images import load_image, save_png


@dataclass(frozen=True)
class SourcePhoto:
    """A photograph file inside an installed package and the split its patches belong to."""

    name: str
    package: str
    relpath: str
    split: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {self.package!r}, which holds the bundled photo "
                                    f"{self.name!r}, is not installed; reinstall the project "
                                    "(`make demo` or pip install -e .)")
        return Path(next(iter(spec.submodule_search_locations))) / self.relpath


def _skimage(name: str, filename: str, split: str) -> SourcePhoto:
    return SourcePhoto(name, "skimage", f"data/{filename}", split)


# Photos that are grey (stored as three equal channels): the "grey" tone in the manifest.
GREY_PHOTOS = frozenset({"camera", "grass", "gravel", "coins", "moon", "brick"})

SOURCE_PHOTOS: tuple[SourcePhoto, ...] = (
    _skimage("astronaut", "astronaut.png", "train"),
    _skimage("rocket", "rocket.jpg", "train"),
    _skimage("motorcycle_left", "motorcycle_left.png", "train"),
    _skimage("motorcycle_right", "motorcycle_right.png", "train"),
    _skimage("hubble_deep_field", "hubble_deep_field.jpg", "train"),
    _skimage("retina", "retina.jpg", "train"),
    _skimage("ihc", "ihc.png", "train"),
    _skimage("camera", "camera.png", "train"),
    _skimage("grass", "grass.png", "train"),
    _skimage("gravel", "gravel.png", "train"),
    _skimage("coins", "coins.png", "train"),
    SourcePhoto("flower", "sklearn", "datasets/images/flower.jpg", "train"),
    SourcePhoto("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "train"),
    _skimage("coffee", "coffee.png", "val"),
    _skimage("moon", "moon.png", "val"),
    _skimage("chelsea", "chelsea.png", "test"),
    SourcePhoto("china", "sklearn", "datasets/images/china.jpg", "test"),
    _skimage("brick", "brick.png", "test"),
)


def _patch(photo: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A random square crop, log-uniform in side between ``size`` and 2/3 of the short side."""
    h, w = photo.shape[:2]
    largest = max(size, int(min(h, w) * 2 / 3))
    side = int(round(np.exp(rng.uniform(np.log(size), np.log(largest)))))
    side = min(max(side, size), min(h, w))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    crop = photo[top:top + side, left:left + side]
    if side != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    flip = bool(rng.random() < 0.5)
    if flip:
        crop = crop[:, ::-1]
    meta = {"crop": [int(left), int(top), side, side], "scale": round(size / side, 4), "flip": flip}
    return np.ascontiguousarray(crop), meta


def write_bundled_corpus(out: str | os.PathLike, *, size: int = 64, count: int = 1000,
                         seed: int = 0, progress: Callable[[int], Any] | None = None) -> Path:
    """Write ``count`` PNG patches of ``size`` px under ``out/real/`` and a ``manifest.jsonl``.

    Patches are spread evenly over the photos; the same seed always gives the same files.
    """
    if size < 8:
        raise ValueError(f"--size must be at least 8 px, got {size}")
    if count < 1:
        raise ValueError(f"--count must be at least 1, got {count}")
    out = Path(out)
    (out / "real").mkdir(parents=True, exist_ok=True)
    photos = {p.name: load_image(p.path()) for p in SOURCE_PHOTOS}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(SOURCE_PHOTOS))
    rows = []
    for i in range(count):
        source = SOURCE_PHOTOS[order[i % len(SOURCE_PHOTOS)]]
        patch, meta = _patch(photos[source.name], size, rng)
        rel = f"real/{source.name}_{i:05d}.png"
        save_png(patch, out / rel)
        rows.append({"path": rel, "label": "real", "generator": None, "split": source.split,
                     "source": source.name, "source_package": source.package,
                     "tone": "grey" if source.name in GREY_PHOTOS else "colour", "seed": seed,
                     "index": i, **meta})
        if progress is not None:
            progress(1)
    write_manifest(out, rows)
    return out
