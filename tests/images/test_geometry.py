"""RLE decoding and the orientation of polygons and masks, at the geometry level."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from app.images.geometry import decode_rle_string, orient_polygon, orient_rle, rle_area, rle_to_mask
from app.images.orientation import oriented_size


def test_decode_rle_string_matches_pycocotools():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 3), (64, 48), (200, 300)]:
        m = (rng.random(shape) > rng.random()).astype(np.uint8)
        m[: shape[0] // 2] = 0  # long runs exercise multi-character numbers
        rle = mask_utils.encode(np.asfortranarray(m))
        runs = decode_rle_string(rle["counts"].decode())
        flat = m.flatten(order="F")
        edges = np.flatnonzero(np.diff(flat)) + 1
        expected = np.diff(np.concatenate(([0], edges, [flat.size])))
        if flat[0] == 1:
            expected = np.concatenate(([0], expected))
        assert runs.tolist() == expected.tolist()
        assert int(runs.sum()) == m.size
        assert np.array_equal(rle_to_mask({"size": list(shape), "counts": rle["counts"].decode()}), m)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_polygon_and_rle_orientation_agree(orientation):
    w, h = 40, 30
    poly = [[5.0, 4.0, 25.0, 4.0, 25.0, 10.0, 12.0, 22.0, 5.0, 16.0]]
    rle = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
    rle = {"size": rle["size"], "counts": rle["counts"].decode()}
    turned_rle = orient_rle(rle, orientation)
    new_w, new_h = oriented_size(w, h, orientation)
    assert turned_rle["size"] == [new_h, new_w]
    raster = mask_utils.merge(mask_utils.frPyObjects(orient_polygon(poly, orientation, w, h), new_h, new_w))
    iou = mask_utils.iou([turned_rle], [raster], [0])[0][0]
    assert iou > 0.9
    assert rle_area(turned_rle) == rle_area(rle)
