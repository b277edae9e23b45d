"""Aligned training data: every fake is made from its own real image and shares its history.

A detector trained on fakes of other content, size or format than its reals learns those
differences instead of the generator's trace (Rajan et al., ICLR 2025: aligned fakes). So:

* reals are crops of photographs at their native resolution: a photo is never downscaled to
  make them (resizing would leave a trace of its own in the real class);
* some reals are resized on purpose (up or down, by an image editor's interpolations): real
  photos that were resized are still real, and a detector must not call a resize "fake";
* each fake is a simulator's reconstruction of one real (an autoencoder whose decoder upsamples
  like a GAN, ``generators.nets.autoencoder``), same content and size;
* both members of a pair then get the identical degradation (JPEG at one quality, blur, drawn
  with a probability), and both are stored losslessly as PNG, so neither class carries a format
  or a compression history of its own.

The fake makers are plain callables (image -> image), so this module needs no generator code;
``forensics.general_recipe`` plugs the zoo's simulators in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from crashsafe.corpus_manifest import write_manifest
from crashsafe.images import save_png
from forensics.perturb import gaussian_blur, jpeg, resize

Maker = Callable[[np.ndarray], np.ndarray]
RESIZE_INTERPOLATIONS = ("bilinear", "bicubic", "area")


@dataclass(frozen=True)
class PairHistory:
    """What happens to a pair: ``resize`` (scale, interpolation) of the real before its fake is
    made, then the same ``blur_sigma`` and ``jpeg_quality`` for both (None: not applied)."""

    resize: tuple[float, str] | None = None
    blur_sigma: float | None = None
    jpeg_quality: int | None = None


@dataclass(frozen=True)
class HistoryOdds:
    """How often each step of a :class:`PairHistory` is drawn, and its range."""

    p_resize: float = 0.3
    scales: tuple[float, float] = (0.5, 1.5)
    p_blur: float = 0.1
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (65, 100)

    def draw(self, rng: np.random.Generator) -> PairHistory:
        scale = float(np.exp(rng.uniform(*np.log(self.scales))))
        return PairHistory(
            resize=((round(scale, 3), str(rng.choice(RESIZE_INTERPOLATIONS)))
                    if rng.random() < self.p_resize and abs(scale - 1) > 0.05 else None),
            blur_sigma=(round(float(rng.uniform(*self.blur_sigma)), 2)
                        if rng.random() < self.p_blur else None),
            jpeg_quality=(int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
                          if rng.random() < self.p_jpeg else None),
        )


def degrade(image: np.ndarray, history: PairHistory) -> np.ndarray:
    """The blur and JPEG of ``history`` applied to one member of a pair (the resize is not: it
    happens to the real before its fake is made)."""
    if history.blur_sigma is not None:
        image = gaussian_blur(image, history.blur_sigma, check=False)
    if history.jpeg_quality is not None:
        image = jpeg(image, history.jpeg_quality, check=False)
    return image


def native_crop(photo: np.ndarray, sizes: tuple[int, int], rng: np.random.Generator
                ) -> tuple[np.ndarray, list[int]]:
    """A random crop with each side drawn from ``sizes`` (clipped to the photo), never resized,
    at even offsets (a 2x2 upsampling grid stays where it was); returns it and its
    [left, top, width, height]."""
    height, width = photo.shape[:2]
    side_h = min(int(rng.integers(sizes[0], sizes[1] + 1)), height) // 2 * 2
    side_w = min(int(rng.integers(sizes[0], sizes[1] + 1)), width) // 2 * 2
    top = int(rng.integers(0, (height - side_h) // 2 + 1)) * 2
    left = int(rng.integers(0, (width - side_w) // 2 + 1)) * 2
    return np.ascontiguousarray(photo[top:top + side_h, left:left + side_w]), \
        [left, top, side_w, side_h]


@dataclass(frozen=True)
class Source:
    """A real photograph to crop: its name, split and pixels."""

    name: str
    split: str
    image: np.ndarray


def write_aligned_pairs(out: str | os.PathLike, sources: Iterable[Source],
                        makers: Mapping[str, Maker], *, crops_per_source: int,
                        sizes: tuple[int, int] = (128, 256), odds: HistoryOdds = HistoryOdds(),
                        seed: int = 0, aligned: bool = True, progress: bool = True) -> Path:
    """Write aligned (real, fake) pairs as a corpus in ``out``: ``real/*.png``,
    ``fake/<maker>/*.png`` and a ``manifest.jsonl`` whose rows carry the source photo, its
    split (both members of a pair share it), the crop box, the pair's history and the pair id.

    Each crop's fake comes from the makers in turn, so every maker gets as many pairs.
    ``aligned=False`` writes the usual unaligned data instead, for ablations: each fake is made
    from another crop of the photo and left as the maker wrote it, while its real gets the
    drawn history.
    """
    out = Path(out)
    sources = list(sources)
    if not makers:
        raise ValueError("no fake makers given: pass at least one simulator")
    names = sorted(makers)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    total = len(sources) * crops_per_source
    with tqdm(total=total, desc="aligned pairs", unit="pair", disable=not progress) as bar:
        for source in sources:
            for _ in range(crops_per_source):
                pair = len(rows) // 2
                crop, box = native_crop(source.image, sizes, rng)
                history = odds.draw(rng)
                if history.resize is not None:
                    crop = resize(crop, history.resize[0], history.resize[1], check=False)
                maker = names[pair % len(names)]
                fake_history, fake_box = history, box
                if aligned:
                    fake = makers[maker](crop)
                else:
                    fake_history = PairHistory()
                    other, fake_box = native_crop(source.image, sizes, rng)
                    fake = makers[maker](other)
                common = {"split": source.split, "source": source.name, "pair": pair,
                          "seed": seed}
                for label, image, folder, done, crop_box in (
                        ("real", crop, "real", history, box),
                        ("fake", fake, f"fake/{maker}", fake_history, fake_box)):
                    rel = f"{folder}/{source.name}_{pair:05d}.png"
                    save_png(degrade(image, done), out / rel)
                    rows.append({"path": rel, "label": label, "crop": crop_box,
                                 "history": asdict(done),
                                 "generator": maker if label == "fake" else None, **common})
                bar.update(1)
    write_manifest(out, rows)
    return out
