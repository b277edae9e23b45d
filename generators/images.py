"""Conversions from generator tensors to RGB uint8 images and grids (written as PNG by
:func:`crashsafe.images.save_png`)."""

from __future__ import annotations

import math

import numpy as np
import torch


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] -> (N, H, W, 3) uint8 numpy array (values clamped)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (N, 3, H, W) tensor, got shape {tuple(images.shape)}")
    scaled = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def image_grid(images: np.ndarray, ncols: int = 8, pad: int = 2) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 images into one image, ``ncols`` per row, black padding."""
    n, h, w, c = images.shape
    nrows = math.ceil(n / ncols)
    grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), dtype=np.uint8)
    for i, image in enumerate(images):
        top = pad + (i // ncols) * (h + pad)
        left = pad + (i % ncols) * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid

