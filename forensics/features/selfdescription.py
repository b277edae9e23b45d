"""Self-descriptions: how well an image predicts itself, at several scales, in a few numbers.

After FSD (Forensic Self-Descriptions, CVPR 2025): every camera image is predicted from itself
by a linear filter fitted to it by least squares, and the filter plus what it fails to predict
describe the process that made the pixels. Real photos share such a description (sensor
noise, demosaicing, a lens's blur); a generator's up-sampling leaves another one (pixels that
are exact blends of their neighbours, residual energy that repeats every 2 pixels). A model
of real descriptions alone then flags images from generators never seen in training.

Per scale (native, then 2x and 4x area-downscaled), on the ITU-R 601 luma in 0..255:

* the least-squares predictor of each pixel from its 5x5 neighbourhood, point-symmetric (a
  pixel's two neighbours at offsets +o and -o share one weight): 12 weights;
* its residual r: log mean r^2, log kurtosis E r^4 / (E r^2)^2, and how unevenly r^2 falls
  on the 2x2 pixel phases (|log| of even/odd row, column and diagonal energy ratios; the
  absolute value makes them independent of where the crop starts).

And once, at native scale: how the green high-pass residual follows the red and blue ones
(least-squares weights and the log share it leaves unexplained), a trace of demosaicing.

Images are never resized; the largest ``MAX_SIDE`` x ``MAX_SIDE`` central crop bounds the
time and memory a huge photo takes (a quarter million pixels give stable statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forensics.features.residual import highpass_residual
from forensics.features.spectrum import (
    check_positive_int,
    check_rgb_image,
    image_planes,
    map_by_shape,
)

__all__ = ["MAX_SIDE", "PER_SCALE", "COLOUR_FEATURES", "self_description_size",
           "min_side", "self_descriptions"]

MAX_SIDE = 512
# Point-symmetric half of the 5x5 neighbourhood: one offset of each (+o, -o) pair.
_OFFSETS = ((0, 1), (0, 2), *((1, dx) for dx in range(-2, 3)), *((2, dx) for dx in range(-2, 3)))
_RADIUS = 2
PER_SCALE = len(_OFFSETS) + 2 + 3  # weights, log energy, log kurtosis, 3 phase contrasts
COLOUR_FEATURES = 3
# The coarsest scale must leave a few residuals per weight.
_MIN_COARSE_SIDE = 8
# Keeps logs finite on flat images (values are in 0..255, so this is far below one grey level).
_EPS = 1e-6
# Relative ridge on the normal equations, so flat or tiny images still give finite weights.
_RIDGE = 1e-8


def self_description_size(scales: int) -> int:
    """Feature count for ``scales`` scales."""
    return PER_SCALE * scales + COLOUR_FEATURES


def min_side(scales: int) -> int:
    """Smallest image side (px) that leaves the coarsest of ``scales`` scales usable."""
    return _MIN_COARSE_SIDE * 2 ** (scales - 1)


def _area_halve(plane: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block (odd last row/column dropped): a 2x area downscale."""
    h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    return plane[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _solve(gram: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares weights from normal equations, with a tiny relative ridge."""
    ridge = _RIDGE * (np.trace(gram) / len(gram) + _EPS)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), target)


def _phase_contrasts(r2: np.ndarray) -> list[float]:
    """|log| energy ratios of even vs odd rows, columns and diagonals of squared residuals."""
    e = np.array([[r2[p::2, q::2].mean() for q in (0, 1)] for p in (0, 1)]) + _EPS
    return [abs(np.log(e[0].sum() / e[1].sum())), abs(np.log(e[:, 0].sum() / e[:, 1].sum())),
            abs(np.log((e[0, 0] + e[1, 1]) / (e[0, 1] + e[1, 0])))]


def _scale_description(plane: np.ndarray) -> list[float]:
    """Predictor weights and residual statistics of one float64 plane (H, W) in 0..255."""
    h, w = plane.shape
    k = _RADIUS

    def shifted(dy: int, dx: int) -> np.ndarray:
        return plane[k + dy : h - k + dy, k + dx : w - k + dx]

    target = shifted(0, 0).ravel()
    design = np.empty((len(_OFFSETS), target.size))
    for row, (dy, dx) in zip(design, _OFFSETS):
        np.add(shifted(dy, dx), shifted(-dy, -dx), out=row.reshape(h - 2 * k, w - 2 * k))
    weights = _solve(design @ design.T, design @ target)
    residual = target - weights @ design
    r2 = residual * residual
    m2 = r2.mean()
    kurtosis = (np.mean(r2 * r2) + _EPS) / (m2 * m2 + _EPS)
    # The crop starts at offset k = 2, so residual phases match the image's own 2x2 phases.
    phases = _phase_contrasts(r2.reshape(h - 2 * k, w - 2 * k))
    return [*weights, np.log(m2 + _EPS), np.log(kurtosis), *phases]


def _colour_description(rgb: np.ndarray) -> list[float]:
    """Green high-pass residual regressed on red and blue ones: 2 weights, log unexplained share."""
    red, green, blue = (highpass_residual(rgb[c]).astype(np.float64).ravel() for c in range(3))
    design = np.stack([red, blue])
    weights = _solve(design @ design.T, design @ green)
    unexplained = green - weights @ design
    return [*weights, np.log((unexplained @ unexplained + _EPS) / (green @ green + _EPS))]


def _central_crop(stack: np.ndarray) -> np.ndarray:
    """At most MAX_SIDE x MAX_SIDE from the middle of (N, H, W, 3), at an even offset."""
    h, w = stack.shape[1:3]
    top, left = max(0, (h - MAX_SIDE) // 4 * 2), max(0, (w - MAX_SIDE) // 4 * 2)
    return stack[:, top : top + MAX_SIDE, left : left + MAX_SIDE]


def _describe_stack(stack: np.ndarray, scales: int) -> np.ndarray:
    """Self-descriptions (n, D) of a uint8 stack (n, H, W, 3) of one shape."""
    rows = []
    for image in _central_crop(stack):  # one image at a time bounds the float copies
        plane = image_planes(image[None], "grey")[0, 0].astype(np.float64) * 255.0
        row = []
        for _ in range(scales):
            row += _scale_description(plane)
            plane = _area_halve(plane)
        rows.append(row + _colour_description(image_planes(image[None], "rgb")[0] * 255.0))
    return np.asarray(rows, dtype=np.float64)


def self_descriptions(images: Sequence[np.ndarray], scales: int = 3) -> np.ndarray:
    """Self-descriptions of RGB uint8 images of any sizes: float32 (N, 17 * scales + 3).

    Raises ValueError for images with a side below ``min_side(scales)`` (32 px for 3 scales).
    """
    scales = check_positive_int(scales, "scales")
    smallest = min_side(scales)
    for index, image in enumerate(images):
        check_rgb_image(image, f"images[{index}]")
        if min(image.shape[:2]) < smallest:
            raise ValueError(
                f"self-description features with scales={scales} need images of at least "
                f"{smallest}x{smallest} pixels, images[{index}] is "
                f"{image.shape[0]}x{image.shape[1]}; use fewer scales "
                "(images are never resized)")
    return map_by_shape(images, lambda stack: _describe_stack(stack, scales),
                        self_description_size(scales))
