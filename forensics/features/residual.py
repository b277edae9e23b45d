"""Noise-residual spectra: the spectrum of what is left once image content is predicted away.

Scene content dominates an image's power spectrum; the traces of a generator's upsampling sit
in the fine residue. Two residuals are offered, each summarised by the azimuthal log power
spectrum of ``forensics.features.spectrum``, so any image size gives the same features:

* ``highpass_residual``: the image filtered by a fixed SRM-style second-order kernel (the "KB"
  kernel of steganalysis rich models), a predictor of each pixel from its 8 neighbours;
* ``npr_residual``: neighbouring-pixel relationships (Tan et al., CVPR 2024), x - up(down(x))
  with nearest-neighbour resampling by 2, which is exactly zero on images that nearest
  upsampling made and keeps what the up-sampler of a GAN left inside each 2x2 block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forensics.features.spectrum import (
    CHANNELS,
    check_channels,
    check_positive_int,
    image_planes,
    map_by_shape,
    planes_azimuthal_spectra,
)

__all__ = ["highpass_residual", "npr_residual", "residual_spectra", "npr_spectra"]


def highpass_residual(planes: np.ndarray) -> np.ndarray:
    """SRM-style high-pass residual of planes (..., H, W), same shape, float32.

    The SRM "KB" kernel -1 2 -1 / 2 -4 2 / -1 2 -1, divided by 4 so a pixel's residual is
    its deviation from a smooth local surface at the scale of the image's values. Borders are
    mirrored (``reflect``), so a flat image gives an all-zero residual. The kernel is
    -outer(a, a) / 4 with a = (-1, 2, -1), so it runs as two 1-D passes: 2.4x faster than
    ``scipy.ndimage.correlate`` with the 3x3 kernel, equal to float32 rounding.
    """
    x = np.asarray(planes, dtype=np.float32)
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], mode="symmetric")
    rows = 2 * padded[..., 1:-1, :] - padded[..., :-2, :] - padded[..., 2:, :]
    return (2 * rows[..., 1:-1] - rows[..., :-2] - rows[..., 2:]) * np.float32(-0.25)


def npr_residual(planes: np.ndarray) -> np.ndarray:
    """NPR residual x - up(down(x)) of planes (..., H, W), float32 (..., H', W').

    H and W are cropped to even sizes H' and W' first; down takes the top-left pixel of each
    2x2 block (nearest resampling by 1/2) and up repeats it over the block. Raises ValueError
    for images smaller than 2x2.
    """
    height, width = (planes.shape[-2] // 2) * 2, (planes.shape[-1] // 2) * 2
    if height == 0 or width == 0:
        raise ValueError(
            f"the NPR residual needs images of at least 2x2 pixels, got {planes.shape[-2:]}"
        )
    x = np.asarray(planes[..., :height, :width], dtype=np.float32)
    anchors = x[..., ::2, ::2]
    return x - anchors.repeat(2, axis=-2).repeat(2, axis=-1)


def _residual_spectra(
    images: Sequence[np.ndarray], residual, n_bins: int, window: bool, channels: str
) -> np.ndarray:
    """Azimuthal log power spectra (N, C * n_bins) float32 of ``residual`` of each image (of
    its tiles, averaged, for images over ``TILED_ABOVE`` pixels)."""
    n_bins = check_positive_int(n_bins, "n_bins")
    return map_by_shape(
        images,
        lambda stack: planes_azimuthal_spectra(
            residual(image_planes(stack, channels)), n_bins, window
        ),
        CHANNELS[check_channels(channels)] * n_bins,
        tiled=True,
    )


def residual_spectra(
    images: Sequence[np.ndarray], n_bins: int = 64, window: bool = True, channels: str = "grey"
) -> np.ndarray:
    """Azimuthal spectra (N, C * n_bins) float32 of the SRM high-pass residual of each image."""
    return _residual_spectra(images, highpass_residual, n_bins, window, channels)


def npr_spectra(
    images: Sequence[np.ndarray], n_bins: int = 64, window: bool = True, channels: str = "grey"
) -> np.ndarray:
    """Azimuthal spectra (N, C * n_bins) float32 of the NPR residual of each image."""
    return _residual_spectra(images, npr_residual, n_bins, window, channels)
