"""The EXIF orientation table: points, masks and PIL's transposes agree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.images.orientation import TRANSPOSE, orient_mask, orient_points, oriented_size


@pytest.mark.parametrize("orientation", range(1, 9))
def test_point_mapping_matches_the_image_transpose(orientation):
    """Every stored pixel, as a unit square, lands on the pixel PIL's transpose moves it to."""
    w, h = 7, 4
    marks = np.arange(w * h, dtype=np.uint8).reshape(h, w)
    img = Image.fromarray(marks)
    turned = np.asarray(img.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else img)
    assert turned.shape[::-1] == oriented_size(w, h, orientation)
    assert np.array_equal(orient_mask(marks, orientation), turned)
    for y in range(h):
        for x in range(w):
            square = np.array([[x, y], [x + 1, y + 1]], dtype=float)
            mapped = orient_points(square, orientation, w, h)
            nx, ny = mapped.min(axis=0).astype(int)
            assert turned[ny, nx] == marks[y, x], (orientation, x, y)
