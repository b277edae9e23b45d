"""Training images for the generators: decoded once, held in memory as uint8."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

# What a broken, truncated, non-image or oversized file raises while Pillow decodes it.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_square_rgb(path: str | Path, resolution: int) -> Image.Image:
    """Decode ``path`` to RGB (EXIF orientation applied), resize the shorter side to
    ``resolution`` (bicubic, antialiased when shrinking) and centre-crop a square."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    left = (size[0] - resolution) // 2
    top = (size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


class ImageFolderDataset(Dataset):
    """Images from ``paths`` as float tensors (3, R, R) in [-1, 1].

    All images are decoded once at construction (training corpora here are small) and kept
    as one uint8 tensor ``images`` of shape (N, 3, R, R). Unreadable files are skipped with one
    warning; ``paths`` lists the images kept and ``skipped`` the (path, reason) pairs left out.
    Raises ValueError when no image is left.
    """

    def __init__(self, paths: Sequence[str | Path], resolution: int):
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValueError("ImageFolderDataset got no image paths; give at least one image")
        self.resolution = resolution
        self.paths: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        arrays = []
        for path in paths:
            try:
                image = load_square_rgb(path, resolution)
            except _DECODE_ERRORS as exc:
                self.skipped.append((path, f"{type(exc).__name__}: {exc}"))
                continue
            arrays.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8))
            self.paths.append(path)
        if self.skipped:
            examples = "; ".join(f"{p}: {why}" for p, why in self.skipped[:3])
            warnings.warn(f"skipped {len(self.skipped)} of {len(paths)} unreadable image(s) "
                          f"(e.g. {examples})", stacklevel=2)
        if not arrays:
            raise ValueError(f"none of the {len(paths)} image(s) could be read "
                             f"(e.g. {self.skipped[0][0]}: {self.skipped[0][1]}); "
                             "check the paths point to image files")
        self.images = (torch.stack(arrays)
                       .view(len(arrays), resolution, resolution, 3)
                       .permute(0, 3, 1, 2)
                       .contiguous())

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].float().div_(127.5).sub_(1.0)
