"""2-D DCT log spectra (Frank et al., ICML 2020): GAN upsampling shows as a grid of peaks.

The type-II DCT (orthonormal) of a generated image carries regular peaks at the frequencies
its up-sampling layers replicate. Frank et al. take the DCT of whole images of one size; our
corpora mix sizes, and resizing would destroy the traces, so the image is cut into
non-overlapping ``tile`` x ``tile`` squares (a centred grid, the remainder left out) and the
log magnitude of each tile's DCT is averaged over the tiles. Every image at least one tile
large thus gives ``tile * tile`` coefficients per channel, computed at its native resolution.

The coefficients are standardised by the mean and variance of the training set (Frank et al.
use Welford's running estimate); that step is learned by the detector that uses the
features, so these functions stay stateless.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

from forensics.features.spectrum import (
    CHANNELS,
    check_channels,
    check_positive_int,
    image_planes,
    map_by_shape,
)

__all__ = ["tile_log_dct", "dct_spectra"]

# Keeps log() finite for exactly zero coefficients (flat tiles).
_EPS = 1e-6


def tile_log_dct(planes: np.ndarray, tile: int = 32) -> np.ndarray:
    """Mean log |DCT-II| over the tiles of planes (N, C, H, W): float32 (N, C, tile, tile).

    Raises ValueError when an image is smaller than one tile in either direction.
    """
    tile = check_positive_int(tile, "tile")
    n, c, height, width = planes.shape
    rows, cols = height // tile, width // tile
    if rows == 0 or cols == 0:
        raise ValueError(
            f"DCT features with tile={tile} need images of at least {tile}x{tile} pixels, "
            f"got {height}x{width}; use a smaller tile (images are never resized)"
        )
    top, left = (height - rows * tile) // 2, (width - cols * tile) // 2
    grid = planes[:, :, top : top + rows * tile, left : left + cols * tile]
    tiles = grid.reshape(n, c, rows, tile, cols, tile)
    coefficients = scipy.fft.dctn(tiles, type=2, norm="ortho", axes=(3, 5))
    logs = np.log(np.abs(coefficients) + np.float32(_EPS))
    return logs.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


def dct_spectra(
    images: Sequence[np.ndarray], tile: int = 32, channels: str = "grey"
) -> np.ndarray:
    """Tile-averaged log DCT spectra of RGB uint8 images: float32 (N, C * tile * tile) (images
    over ``TILED_ABOVE`` pixels are read in ``FEATURE_TILE`` px pieces, averaged alike)."""
    tile = check_positive_int(tile, "tile")
    size = CHANNELS[check_channels(channels)] * tile * tile
    return map_by_shape(
        images,
        lambda stack: tile_log_dct(image_planes(stack, channels), tile).reshape(len(stack), size),
        size,
        tiled=True,
    )
