"""Pure geometry on COCO segmentations and boxes in an image's pixels: validation, clipping,
derivation, orientation.

Masks are handled as RLE through pycocotools. Its C decoder trusts the run lengths it is given
(runs summing past h*w write past the buffer), so compressed strings are decoded and checked
here, in numpy, before pycocotools ever sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .orientation import orient_mask, orient_points

Box = tuple[float, float, float, float]
Polygon = list[list[float]]
Rle = dict[str, Any]  # {"size": [h, w], "counts": str}

_MAX_COUNT_CHARS = 12  # 60 bits: far more than any run in an image we accept


class GeometryError(ValueError):
    """The segmentation is malformed in a way that cannot be repaired by dropping parts."""


@dataclass
class PolygonCleanup:
    parts: Polygon
    dropped_parts: int
    clipped: bool


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def clean_polygon(parts: Polygon, width: int, height: int) -> PolygonCleanup:
    """Clip points into the image and drop parts that cannot describe an area."""
    kept: Polygon = []
    dropped = 0
    clipped = False
    for part in parts:
        if len(part) < 6 or len(part) % 2:
            dropped += 1
            continue
        points = np.asarray(part, dtype=np.float64).reshape(-1, 2)
        inside = np.clip(points, 0.0, [float(width), float(height)])
        if not np.array_equal(inside, points):
            clipped = True
        if polygon_area(inside) <= 0.0:
            dropped += 1
            continue
        kept.append(inside.ravel().tolist())
    return PolygonCleanup(kept, dropped, clipped)


def polygon_bbox(parts: Polygon) -> Box:
    points = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts])
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def polygon_to_rle(parts: Polygon, width: int, height: int) -> Rle:
    # pycocotools reads a 4-number "polygon" as a box; cleaned parts always have >= 6 numbers.
    merged = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    return rle_from_pycocotools(merged)


def clip_bbox(bbox: Box, width: int, height: int) -> tuple[Box, bool]:
    """Clip an x, y, w, h box to the image; report whether it moved by more than float noise."""
    x, y, w, h = bbox
    x0, x1 = np.clip([x, x + w], 0.0, float(width))
    y0, y1 = np.clip([y, y + h], 0.0, float(height))
    clipped_box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    moved = any(abs(a - b) > 1e-6 for a, b in zip(clipped_box, bbox, strict=True))
    # A negative width or height is "moved" too, but it is reported as a dropped box instead.
    return clipped_box, moved and w > 0 and h > 0


def rle_from_pycocotools(rle: dict[str, Any]) -> Rle:
    """pycocotools' RLE (bytes counts, numpy sizes) as the JSON-ready `Rle` stored everywhere else."""
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def decode_rle_string(counts: str) -> np.ndarray:
    """Run lengths from COCO's compressed RLE string (LEB128-like, 6 bits per char, delta-coded)."""
    try:
        raw = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError as exc:
        raise GeometryError("compressed RLE counts contain non-ASCII characters") from exc
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ((raw < 0) | (raw > 63)).any():
        raise GeometryError("compressed RLE counts contain invalid characters")
    more = (raw & 0x20) != 0
    if more[-1]:
        raise GeometryError("compressed RLE counts end in the middle of a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_COUNT_CHARS:
        raise GeometryError("compressed RLE counts hold an impossibly large run")
    position = np.arange(raw.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((raw & 0x1F) << (5 * position), starts)
    negative = (raw[ends] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << (5 * lengths)), values)
    # From the third run on, each value is stored as the difference to the run two places back.
    runs = values.copy()
    runs[2::2] = np.cumsum(values[2::2])
    runs[1::2] = np.cumsum(values[1::2])
    return runs


def _check_runs(runs: np.ndarray, height: int, width: int) -> None:
    if (runs < 0).any():
        raise GeometryError("RLE counts contain a negative run")
    if int(runs.sum()) != height * width:
        raise GeometryError(f"RLE counts cover {int(runs.sum())} pixels but the mask has {height * width}")


def rle_to_compressed(seg: dict[str, Any], width: int, height: int) -> Rle:
    """Validate an uncompressed ({counts: [int]}) or compressed ({counts: str}) RLE against the
    image size and return it compressed with str counts."""
    mask_h, mask_w = (int(v) for v in seg["size"])
    if (mask_h, mask_w) != (height, width):
        raise GeometryError(
            f"RLE size is {mask_h}x{mask_w} (height x width) but the image is {height}x{width}"
        )
    counts = seg["counts"]
    if isinstance(counts, str):
        _check_runs(decode_rle_string(counts), height, width)
        return {"size": [height, width], "counts": counts}
    runs = np.asarray(counts, dtype=np.int64)
    _check_runs(runs, height, width)
    compressed = mask_utils.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)
    return rle_from_pycocotools(compressed)


def rle_area(rle: Rle) -> float:
    return float(mask_utils.area(rle))


def rle_bbox(rle: Rle) -> Box:
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return (x, y, w, h)


def orient_polygon(parts: Polygon, orientation: int, width: int, height: int) -> Polygon:
    """Move polygon parts drawn on the stored (`width` x `height`) image onto the displayed one."""
    out: Polygon = []
    for part in parts:
        if len(part) < 2 or len(part) % 2:
            out.append(list(part))  # left for clean_polygon to drop and count
            continue
        points = np.asarray(part, dtype=np.float64).reshape(-1, 2)
        out.append(orient_points(points, orientation, width, height).ravel().tolist())
    return out


def orient_bbox(bbox: Box, orientation: int, width: int, height: int) -> Box:
    x, y, w, h = bbox
    corners = orient_points(np.array([[x, y], [x + w, y + h]], dtype=np.float64), orientation, width, height)
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def rle_to_mask(rle: Rle) -> np.ndarray:
    """Decode a validated compressed RLE to an (h, w) uint8 array.

    Done in numpy rather than `mask_utils.decode`, which emits a DeprecationWarning under numpy 2."""
    height, width = rle["size"]
    runs = decode_rle_string(rle["counts"])
    values = (np.arange(runs.size) % 2).astype(np.uint8)
    # COCO masks are column-major: consecutive pixels run down a column.
    return np.repeat(values, runs).reshape(width, height).T


def orient_rle(rle: Rle, orientation: int) -> Rle:
    mask = rle_to_mask(rle)
    turned = orient_mask(mask, orientation)
    return rle_from_pycocotools(mask_utils.encode(np.asfortranarray(turned, dtype=np.uint8)))
