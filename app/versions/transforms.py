"""Resize an image to the version's size and move its annotations with the pixels.

Coordinates are continuous, COCO style: pixel edges sit on integers, so pixel (0, 0) covers
[0, 1) x [0, 1). Under that convention Pillow's resize maps a source point x to x * scale (plus the
letterbox offset) exactly, and a `Frame` describes that affine map per axis.

Everything here is a pure function of its arguments: the version builder calls it from several
threads at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from app.images.decode import SOURCE_BOX_KEY, SOURCE_SIZE_KEY
from app.images.geometry import (
    GeometryError,
    Polygon,
    Rle,
    decode_rle_string,
    orient_bbox,
    orient_polygon,
    polygon_area,
    polygon_to_rle,
    rle_area,
    rle_bbox,
    rle_from_pycocotools,
    rle_to_compressed,
)
from app.images.orientation import TRANSPOSE, orient_mask, oriented_size
from app.versions.schemas import Resize

# EXIF orientations 6 and 8 are each other's inverse; the flips, 180 and the transposes undo themselves.
_INVERSE_ORIENTATION = {6: 8, 8: 6}

_RESAMPLE = Image.Resampling.BILINEAR  # what SAM 3's processor uses; area-aware when shrinking
_REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Instance:
    class_id: int
    bbox: tuple[float, float, float, float]  # x, y, w, h
    segmentation: list[list[float]] | dict[str, Any] | None  # polygons, compressed RLE (str counts) or None
    iscrowd: bool = False
    area: float = 0.0


@dataclass(frozen=True)
class Frame:
    """How output pixels relate to source pixels: out = src * scale + offset, per axis."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    width: int  # output size
    height: int

    def content_box(self, src_width: float, src_height: float) -> tuple[float, float, float, float]:
        """Where a `src_width` x `src_height` source lands in the output, clipped to it: x0, y0, x1, y1."""
        x0 = max(0.0, self.offset_x)
        y0 = max(0.0, self.offset_y)
        x1 = min(float(self.width), self.offset_x + src_width * self.scale_x)
        y1 = min(float(self.height), self.offset_y + src_height * self.scale_y)
        return x0, y0, x1, y1


@dataclass(frozen=True)
class _Layout:
    """Where the resized source sits on the output canvas (integer pixels)."""

    left: int
    top: int
    width: int
    height: int


def _layout(src_width: float, src_height: float, spec: Resize) -> _Layout:
    if spec.mode == "stretch":
        return _Layout(0, 0, spec.width, spec.height)
    scale = min(spec.width / src_width, spec.height / src_height)
    width = min(spec.width, max(1, round(src_width * scale)))
    height = min(spec.height, max(1, round(src_height * scale)))
    return _Layout((spec.width - width) // 2, (spec.height - height) // 2, width, height)


def _frame(layout: _Layout, box: tuple[float, float, float, float], spec: Resize) -> Frame:
    """The frame mapping the source region `box` (x0, y0, x1, y1) onto the layout's content box."""
    scale_x = layout.width / (box[2] - box[0])
    scale_y = layout.height / (box[3] - box[1])
    return Frame(
        scale_x=scale_x,
        scale_y=scale_y,
        offset_x=layout.left - box[0] * scale_x,
        offset_y=layout.top - box[1] * scale_y,
        width=spec.width,
        height=spec.height,
    )


def frame_for(src_width: int, src_height: int, spec: Resize) -> Frame:
    """The frame from full-resolution source pixels (the annotation frame) to output pixels."""
    if src_width <= 0 or src_height <= 0:
        raise ValueError(f"source size must be positive, got {src_width}x{src_height}")
    layout = _layout(src_width, src_height, spec)
    return _frame(layout, (0.0, 0.0, float(src_width), float(src_height)), spec)


# --------------------------------------------------------------------------------------------- pixels


def resize(
    img: Image.Image,
    spec: Resize,
    *,
    source_size: tuple[int, int] | None = None,
    source_box: tuple[float, float, float, float] | None = None,
) -> tuple[Image.Image, Frame]:
    """Resize to the spec: stretch to exactly width x height, or letterbox (fit, centre on black).

    Returns the output image and the frame from full-resolution source coordinates, the annotations'
    frame, to output pixels: the same frame `frame_for(full size)` gives, from the same layout that
    placed the pixels. For an image from `app.images.decode.load_rgb_for_resize` (perhaps decoded at
    reduced scale) the full-resolution size and the full image's extent in `img` come from what it
    records; `source_size`/`source_box` override that record. Otherwise `img` is taken as the full image."""
    if source_size is None:
        source_size = img.info.get(SOURCE_SIZE_KEY, (img.width, img.height))
    if source_box is None:
        source_box = img.info.get(SOURCE_BOX_KEY, (0.0, 0.0, float(img.width), float(img.height)))
    layout = _layout(source_size[0], source_size[1], spec)
    box = (float(source_box[0]), float(source_box[1]), float(source_box[2]), float(source_box[3]))
    full = box == (0.0, 0.0, float(img.width), float(img.height))
    if full and (layout.width, layout.height) == img.size:
        content = img.copy()
    else:
        content = img.resize((layout.width, layout.height), _RESAMPLE, box=box, reducing_gap=_REDUCING_GAP)
    content.info.pop(SOURCE_SIZE_KEY, None)
    content.info.pop(SOURCE_BOX_KEY, None)
    if (layout.width, layout.height) == (spec.width, spec.height):
        out = content
    else:
        out = Image.new(img.mode, (spec.width, spec.height))  # black
        out.paste(content, (layout.left, layout.top))
    full_frame = (0.0, 0.0, float(source_size[0]), float(source_size[1]))
    return out, _frame(layout, full_frame, spec)


# ---------------------------------------------------------------------------------------- annotations


def transform_instances(
    instances: Sequence[Instance],
    src_width: int,
    src_height: int,
    frame: Frame,
    *,
    min_instance_px: float = 0.0,
    unorient: int | None = None,
) -> tuple[list[Instance], int]:
    """Move annotations from the source frame (`src_width` x `src_height`, EXIF orientation applied)
    into the output frame; return the instances kept and how many were dropped.

    With `unorient` (the image's EXIF orientation, for versions built without auto-orient) the
    annotations are first moved back onto the stored pixels, and `frame` must be the frame of the
    stored image (`frame_for(raw width, raw height, ...)`). Instances left with no pixels, or whose box
    is narrower or shorter than `min_instance_px`, are dropped."""
    kept: list[Instance] = []
    dropped = 0
    for inst in instances:
        moved = _transform_one(inst, src_width, src_height, frame, unorient)
        if moved is None or not _big_enough(moved.bbox, min_instance_px):
            dropped += 1
            continue
        kept.append(moved)
    return kept, dropped


def _big_enough(bbox: Sequence[float], min_px: float) -> bool:
    width, height = bbox[2], bbox[3]
    return width > 0 and height > 0 and width >= min_px and height >= min_px


def _transform_one(
    inst: Instance, src_width: int, src_height: int, frame: Frame, unorient: int | None
) -> Instance | None:
    seg = inst.segmentation
    orientation = unorient if unorient is not None and unorient in TRANSPOSE else None
    inverse = _INVERSE_ORIENTATION.get(orientation, orientation) if orientation else None
    width, height = src_width, src_height  # of the frame the annotation is in at each step
    if inverse is not None:
        width, height = oriented_size(src_width, src_height, inverse)
    content = frame.content_box(width, height)

    if seg is None:
        box = inst.bbox
        if inverse is not None:
            box = orient_bbox(box, inverse, src_width, src_height)
        mapped = _map_box(box, frame, content)
        if mapped is None:
            return None
        return Instance(inst.class_id, mapped, None, inst.iscrowd, mapped[2] * mapped[3])

    if isinstance(seg, dict):
        rle = rle_to_compressed(seg, src_width, src_height)
        window = _decode_window(rle)
        if window is None:
            return None
        if inverse is not None:
            window = _orient_window(window, inverse, src_width, src_height)
        out_rle = _resample_window(window, frame, width, height)
        if out_rle is None:
            return None
        area = rle_area(out_rle)
        if area <= 0:
            return None
        return Instance(inst.class_id, rle_bbox(out_rle), out_rle, inst.iscrowd, area)

    parts: Polygon = list(seg)
    if inverse is not None:
        parts = orient_polygon(parts, inverse, src_width, src_height)
    mapped_parts = _map_polygon(parts, frame, content)
    if not mapped_parts:
        return None
    # Area and box both come from the rasterised polygon, the mask a model trains on, so they agree
    # with each other and with RLE instances (a polygon's own extent can be up to a pixel or two
    # wider where a sharp spike covers no pixel centre).
    raster = polygon_to_rle(mapped_parts, frame.width, frame.height)
    area = rle_area(raster)
    if area <= 0:
        return None
    return Instance(inst.class_id, rle_bbox(raster), mapped_parts, inst.iscrowd, area)


def _map_box(
    bbox: Sequence[float], frame: Frame, content: tuple[float, float, float, float]
) -> tuple[float, float, float, float] | None:
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0):
        return None
    x0 = min(max(x * frame.scale_x + frame.offset_x, content[0]), content[2])
    x1 = min(max((x + w) * frame.scale_x + frame.offset_x, content[0]), content[2])
    y0 = min(max(y * frame.scale_y + frame.offset_y, content[1]), content[3])
    y1 = min(max((y + h) * frame.scale_y + frame.offset_y, content[1]), content[3])
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def _map_polygon(parts: Polygon, frame: Frame, content: tuple[float, float, float, float]) -> Polygon:
    """Scale and shift each part, clamp it into the content box, and drop parts with no area."""
    scale = np.array([frame.scale_x, frame.scale_y])
    offset = np.array([frame.offset_x, frame.offset_y])
    low = np.array(content[:2])
    high = np.array(content[2:])
    out: Polygon = []
    for part in parts:
        if len(part) < 6 or len(part) % 2:
            continue
        points = np.asarray(part, dtype=np.float64).reshape(-1, 2) * scale + offset
        points = np.clip(points, low, high)
        if polygon_area(points) <= 0.0:
            continue
        out.append(points.ravel().tolist())
    return out


# A mask window: the (h, w) uint8 pixels of a mask's bounding rectangle, where that rectangle sits
# (left, top), and the size of the whole mask. Working on windows keeps big sources cheap.
@dataclass(frozen=True)
class _Window:
    pixels: np.ndarray
    left: int
    top: int
    mask_width: int
    mask_height: int


def _decode_window(rle: Rle) -> _Window | None:
    """Decode only the bounding rectangle of a validated compressed RLE."""
    height, width = (int(v) for v in rle["size"])
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    if w <= 0 or h <= 0:
        return None
    runs = decode_rle_string(rle["counts"])
    ends = np.cumsum(runs)
    starts = ends - runs
    # COCO masks run down columns, so columns x..x+w are one contiguous stretch of the runs.
    first, last = x * height, (x + w) * height
    lengths = np.clip(ends, first, last) - np.clip(starts, first, last)
    values = (np.arange(runs.size) % 2).astype(np.uint8)
    columns = np.repeat(values, lengths).reshape(w, height)
    return _Window(np.ascontiguousarray(columns[:, y : y + h].T), x, y, width, height)


def _orient_window(window: _Window, orientation: int, width: int, height: int) -> _Window:
    """Apply an EXIF orientation to a window of a `width` x `height` mask."""
    h, w = window.pixels.shape
    x, y, _, _ = orient_bbox((window.left, window.top, w, h), orientation, width, height)
    new_w, new_h = oriented_size(width, height, orientation)
    pixels = np.ascontiguousarray(orient_mask(window.pixels, orientation))
    return _Window(pixels, int(round(x)), int(round(y)), new_w, new_h)


def _resample_window(window: _Window, frame: Frame, src_width: int, src_height: int) -> Rle | None:
    """Resample a mask window into the output frame and encode the whole output mask.

    Each output pixel takes the share of its footprint that the mask covers (box filter: area
    averaging when shrinking, nearest when enlarging) and is set where that share is at least half,
    so a part thinner than half an output pixel disappears and anything thicker survives."""
    if (window.mask_width, window.mask_height) != (src_width, src_height):
        raise GeometryError(
            f"mask is {window.mask_width}x{window.mask_height} but the source is {src_width}x{src_height}"
        )
    h, w = window.pixels.shape
    cx0, cy0, cx1, cy1 = frame.content_box(src_width, src_height)
    out_x0 = max(math.floor(max(cx0, window.left * frame.scale_x + frame.offset_x)), math.ceil(cx0))
    out_x1 = min(math.ceil(min(cx1, (window.left + w) * frame.scale_x + frame.offset_x)), math.floor(cx1))
    out_y0 = max(math.floor(max(cy0, window.top * frame.scale_y + frame.offset_y)), math.ceil(cy0))
    out_y1 = min(math.ceil(min(cy1, (window.top + h) * frame.scale_y + frame.offset_y)), math.floor(cy1))
    if out_x1 <= out_x0 or out_y1 <= out_y0:
        return None
    # The source region those output pixels cover, in whole-mask coordinates.
    box_x0 = max(0.0, (out_x0 - frame.offset_x) / frame.scale_x)
    box_x1 = min(float(src_width), (out_x1 - frame.offset_x) / frame.scale_x)
    box_y0 = max(0.0, (out_y0 - frame.offset_y) / frame.scale_y)
    box_y1 = min(float(src_height), (out_y1 - frame.offset_y) / frame.scale_y)
    # Cut that region (plus a margin, zeros outside the window but never past the mask's edge, where
    # the filter is truncated) out of the window, so the result equals resampling the whole mask.
    sx0 = max(0, math.floor(box_x0) - 2)
    sx1 = min(src_width, math.ceil(box_x1) + 2)
    sy0 = max(0, math.floor(box_y0) - 2)
    sy1 = min(src_height, math.ceil(box_y1) + 2)
    region = np.zeros((sy1 - sy0, sx1 - sx0), dtype=np.float32)
    ix0, ix1 = max(sx0, window.left), min(sx1, window.left + w)
    iy0, iy1 = max(sy0, window.top), min(sy1, window.top + h)
    if ix1 > ix0 and iy1 > iy0:
        region[iy0 - sy0 : iy1 - sy0, ix0 - sx0 : ix1 - sx0] = window.pixels[
            iy0 - window.top : iy1 - window.top, ix0 - window.left : ix1 - window.left
        ]
    resampled = Image.fromarray(region).resize(
        (out_x1 - out_x0, out_y1 - out_y0),
        Image.Resampling.BOX,
        box=(box_x0 - sx0, box_y0 - sy0, box_x1 - sx0, box_y1 - sy0),
    )
    mask = np.zeros((frame.height, frame.width), dtype=np.uint8, order="F")
    mask[out_y0:out_y1, out_x0:out_x1] = np.asarray(resampled) >= 0.5 - 1e-6
    if not mask.any():
        return None
    return rle_from_pycocotools(mask_utils.encode(mask))
