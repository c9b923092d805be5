"""EXIF orientation: the one table that images and annotations must agree on.

The transposes are those of `PIL.ImageOps.exif_transpose`, so an image decoded here and the
annotations moved here land in the same frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_AXES = frozenset({5, 6, 7, 8})


def oriented_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation in SWAPS_AXES else (width, height)


def orient_points(points: np.ndarray, orientation: int, width: int, height: int) -> np.ndarray:
    """Map (N, 2) x/y coordinates on the stored image (`width` x `height`) to the displayed one.

    Coordinates are continuous (pixel edges at integers), so a flip maps x to `width - x`."""
    x, y = points[:, 0], points[:, 1]
    w, h = float(width), float(height)
    mapped = {
        1: (x, y),
        2: (w - x, y),
        3: (w - x, h - y),
        4: (x, h - y),
        5: (y, x),
        6: (h - y, x),
        7: (h - y, w - x),
        8: (y, w - x),
    }.get(orientation, (x, y))
    return np.stack(mapped, axis=1)


def orient_mask(mask: np.ndarray, orientation: int) -> np.ndarray:
    """Apply the orientation to an (H, W) array the way PIL transposes the image."""
    ops = {
        1: lambda m: m,
        2: lambda m: m[:, ::-1],
        3: lambda m: m[::-1, ::-1],
        4: lambda m: m[::-1, :],
        5: lambda m: m.T,
        6: lambda m: m[::-1, :].T,
        7: lambda m: m[::-1, ::-1].T,
        8: lambda m: m[:, ::-1].T,
    }
    return ops.get(orientation, ops[1])(mask)
