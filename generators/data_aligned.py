"""Aligned training pairs (input, target) for image-to-image translation (pix2pix).

A pair comes from one file, by the config's ``task``:

- ``"pairs"``: a side-by-side A|B image, the layout of the pix2pix datasets (facades, maps,
  edges2shoes): the left half is A, the right half B; ``direction`` "AtoB" makes A the input
  and B the target, "BtoA" the reverse;
- ``"edges2photo"``: a photo; the input is its OpenCV Canny edges (``canny_low`` /
  ``canny_high`` hysteresis thresholds on the 8-bit grey image), drawn black on white like
  edges2shoes, the target the photo;
- ``"grey2colour"``: a photo; the input is its ITU-R BT.601 luma (0.299 R + 0.587 G +
  0.114 B) in all three channels, the target the photo.

Each half or photo is resized and centre-cropped to the training resolution first, and edges
and grey are computed at that resolution, so what the generator sees in training is what
:meth:`PairTask.source_input` makes of a source image at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from crashsafe.images import load_image

from .data import _check_resolution, _decode_all, square_rgb

TASKS = ("pairs", "edges2photo", "grey2colour")
DIRECTIONS = ("AtoB", "BtoA")


def canny_edges(photo: np.ndarray, low: float, high: float) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) uint8: Canny edges of its grey image, black on white."""
    edges = cv2.Canny(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(255 - edges[:, :, None], 3, axis=2)


def grey(photo: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) uint8: the BT.601 luma repeated in every channel."""
    return np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


def split_side_by_side(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The left (A) and right (B) halves of an (H, W, 3) A|B image (an odd last column is
    dropped)."""
    height, width = image.shape[:2]
    if width < 2:
        raise ValueError(f"a {width}x{height} px image has no left and right halves")
    half = width // 2
    return image[:, :half], image[:, half:2 * half]


@dataclass(frozen=True)
class PairTask:
    """How one file becomes an (input, target) pair at ``resolution``; see the module doc."""

    task: str
    direction: str
    canny_low: float
    canny_high: float
    resolution: int

    @classmethod
    def from_config(cls, config: dict) -> "PairTask":
        return cls(config["task"], config["direction"], config["canny_low"],
                   config["canny_high"], config["resolution"])

    def __post_init__(self) -> None:
        _check_resolution(self.resolution)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got "
                             f"{self.direction!r}")

    def _input_of(self, photo: np.ndarray) -> np.ndarray:
        """The built-in task's input made from a photo."""
        if self.task == "edges2photo":
            return canny_edges(photo, self.canny_low, self.canny_high)
        return grey(photo)

    def pair(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(input, target), each (R, R, 3) uint8, from the file at ``path``."""
        return self._pair_of(load_image(path))

    def _pair_of(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) made from a decoded (H, W, 3) uint8 file."""
        if self.task == "pairs":
            a, b = (square_rgb(half, self.resolution) for half in split_side_by_side(image))
            return (a, b) if self.direction == "AtoB" else (b, a)
        photo = square_rgb(image, self.resolution)
        return self._input_of(photo), photo

    def source_input(self, path: str | Path) -> np.ndarray:
        """What the generator translates for a source file at sampling time, (R, R, 3) uint8:
        the input half of an A|B pair, the input image itself when it is not side-by-side
        (``"pairs"``), or the input computed from a photo (built-in tasks)."""
        image = load_image(path)
        height, width = image.shape[:2]
        if self.task == "pairs" and width < 2 * height:  # a lone input, not an A|B pair
            return square_rgb(image, self.resolution)
        return self._pair_of(image)[0]


class AlignedDataset(Dataset):
    """(input, target) pairs made by ``task`` from ``paths``, as uint8 tensors ``inputs`` and
    ``targets`` (N, 3, R, R), decoded once; unreadable files are skipped with one warning
    (``paths`` lists those kept, ``skipped`` the (path, reason) pairs left out).

    Items and batches are (inputs, targets) float in [-1, 1]. :meth:`training_batch` mirrors
    each pair left-right with probability 1/2 when ``flip`` (the pix2pix augmentation), drawing
    from torch's global generator, which the trainer seeds and checkpoints.
    """

    def __init__(self, paths: Sequence[str | Path], task: PairTask, *, flip: bool = True):
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValueError("AlignedDataset got no image paths; give at least one image")
        self.task, self.flip = task, flip
        self.resolution = task.resolution
        kept, pairs, self.skipped = _decode_all(paths, task.pair)
        self.paths = [paths[i] for i in kept]
        self.inputs, self.targets = (
            torch.from_numpy(np.stack([p[side] for p in pairs])).permute(0, 3, 1, 2).contiguous()
            for side in (0, 1))

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs ``indices`` as (inputs, targets), each (N, 3, R, R) float in [-1, 1]."""
        return tuple(images[indices].float().div_(127.5).sub_(1.0)
                     for images in (self.inputs, self.targets))

    def training_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`batch`, each pair (input and target alike) mirrored at random if ``flip``."""
        inputs, targets = self.batch(indices)
        if self.flip:
            mirrored = torch.rand(len(indices)) < 0.5
            inputs[mirrored] = inputs[mirrored].flip(3)
            targets[mirrored] = targets[mirrored].flip(3)
        return inputs, targets

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.batch(torch.tensor([index]))
        return inputs[0], targets[0]
