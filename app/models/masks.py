"""Mask encodings for responses: RLE with pycocotools, polygons with OpenCV's contour tracing."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def rle_json(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode() if isinstance(counts, bytes) else counts}


def polygon(rle: dict) -> list[tuple[float, float]]:
    """The outline of the mask's largest region, in pixels (Roboflow returns one polygon per instance)."""
    binary = mask_utils.decode(rle_json(rle) | {"counts": rle_json(rle)["counts"].encode()})
    contours, _ = cv2.findContours(np.ascontiguousarray(binary, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)  # fmt: skip
    if not contours:
        return []
    largest = max(contours, key=cv2.contourArea)
    return [(float(x), float(y)) for x, y in largest.reshape(-1, 2)]
