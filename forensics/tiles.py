"""Tiles and strips that cover an image: the one grid that CNN scoring, tiled features and
explanations share, and the strips of rows that float perturbations and pixel maps go by, so
a large image is processed piece by piece in bounded memory, never resized."""

from __future__ import annotations

from collections.abc import Iterator

Box = tuple[slice, slice]

__all__ = ["Box", "STRIP_PIXELS", "row_strips", "tile_boxes"]

# Pixels a float computation over a strip of rows holds at once: 4 MP (16 MB a float32 plane),
# where a 64 MP image's float copy would take 768 MB.
STRIP_PIXELS = 1 << 22


def row_strips(height: int, width: int) -> Iterator[tuple[int, int]]:
    """(top, bottom) rows of consecutive strips of about ``STRIP_PIXELS`` pixels each."""
    rows = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        yield top, min(top + rows, height)


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
