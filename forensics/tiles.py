"""Tiles that cover an image: the one grid that CNN scoring, tiled features and explanations
share, so a large image is processed piece by piece in bounded memory, never resized (the
strips of rows that per-pixel work goes by are :func:`crashsafe.images.row_strips`)."""

from __future__ import annotations

Box = tuple[slice, slice]

__all__ = ["Box", "tile_boxes"]


def tile_boxes(height: int, width: int, tile: int) -> list[Box]:
    """Tiles of at most ``tile`` px per side covering an image, in row-major order.

    An image that fits is one box. Otherwise tiles sit on a grid of step ``tile``, the last
    row and column moved back to end at the border, so every tile has the same shape and no
    pixel is left out (the last ones overlap their neighbours).
    """

    def starts(side: int) -> list[int]:
        if side <= tile:
            return [0]
        return sorted(set(range(0, side - tile, tile)) | {side - tile})

    tile_h, tile_w = min(height, tile), min(width, tile)
    return [(slice(top, top + tile_h), slice(left, left + tile_w))
            for top in starts(height) for left in starts(width)]
