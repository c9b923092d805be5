"""Turn one COCO annotation into a `ParsedAnnotation` in the displayed image's pixel frame.

Repairable problems (points or boxes outside the image, degenerate parts) are fixed and
counted in `Notes`; an RLE that does not fit its image cannot be repaired and raises.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.images.decode import ImageInfo
from app.images.geometry import (
    Box,
    GeometryError,
    Polygon,
    Rle,
    clean_polygon,
    clip_bbox,
    orient_bbox,
    orient_polygon,
    orient_rle,
    polygon_bbox,
    polygon_to_rle,
    rle_area,
    rle_bbox,
    rle_to_compressed,
)
from app.images.orientation import SWAPS_AXES

from .coco import CocoAnnotation, CocoImage, RleSegmentation
from .errors import InvalidContent
from .models import ParsedAnnotation
from .notes import Notes


@dataclass(frozen=True)
class Frame:
    width: int  # the displayed image, which every output coordinate refers to
    height: int
    orientation: int = 1
    raw_width: int = 0
    raw_height: int = 0
    # True when the annotations were drawn on the stored (un-rotated) pixels.
    from_raw: bool = False


def choose_frame(record: CocoImage, info: ImageInfo, notes: Notes, source: str) -> Frame:
    """Annotations are taken to be drawn on the image as displayed, unless the file's declared
    size matches only the stored, axis-swapped size: then they were drawn before rotation."""
    declared = record.declared_size
    oriented = (info.width, info.height)
    if declared is not None and declared != oriented:
        if info.orientation in SWAPS_AXES and declared == (info.raw_width, info.raw_height):
            notes.count("exif_rotated", source, example=record.file_name)
            return Frame(*oriented, info.orientation, info.raw_width, info.raw_height, from_raw=True)
        notes.count("size_mismatch", source, example=record.file_name)
    return Frame(*oriented)


def _compressed(seg: RleSegmentation, width: int, height: int, ann: CocoAnnotation, source: str) -> Rle:
    try:
        return rle_to_compressed(seg.model_dump(), width, height)
    except GeometryError as exc:
        raise InvalidContent(f"{source}: annotation {ann.id!r}: {exc}", source=source) from exc


def build_annotation(
    ann: CocoAnnotation, category: str, frame: Frame, notes: Notes, source: str
) -> ParsedAnnotation | None:
    """Return the normalised annotation, or None when nothing usable is left of it."""
    width, height = frame.width, frame.height
    bbox: Box | None = ann.bbox
    polygon: Polygon | None = ann.segmentation if isinstance(ann.segmentation, list) else None
    rle: Rle | None = None
    if isinstance(ann.segmentation, RleSegmentation):
        drawn_w, drawn_h = (frame.raw_width, frame.raw_height) if frame.from_raw else (width, height)
        rle = _compressed(ann.segmentation, drawn_w, drawn_h, ann, source)
    had_mask = polygon is not None or rle is not None
    changed = frame.from_raw

    if frame.from_raw:
        o, raw_w, raw_h = frame.orientation, frame.raw_width, frame.raw_height
        polygon = orient_polygon(polygon, o, raw_w, raw_h) if polygon is not None else None
        rle = orient_rle(rle, o) if rle is not None else None
        bbox = orient_bbox(bbox, o, raw_w, raw_h) if bbox is not None else None

    mask: Polygon | Rle | None = None
    if polygon is not None:
        cleaned = clean_polygon(polygon, width, height)
        if cleaned.dropped_parts:
            notes.count("part_dropped", source, n=cleaned.dropped_parts)
        if cleaned.clipped:
            notes.count("polygon_clipped", source)
        changed = changed or cleaned.clipped or cleaned.dropped_parts > 0
        mask = cleaned.parts or None
    elif rle is not None and rle_area(rle) > 0:
        mask = rle

    if bbox is not None:
        bbox, clipped = clip_bbox(bbox, width, height)
        if clipped:
            notes.count("box_clipped", source)
            changed = True
        if bbox[2] <= 0 or bbox[3] <= 0:
            bbox = None
            if mask is not None:
                notes.count("box_from_mask", source)
    # After a rotation the mask is the exact geometry; the rotated box only bounds the old one.
    if mask is not None and (bbox is None or frame.from_raw):
        bbox = polygon_bbox(mask) if isinstance(mask, list) else rle_bbox(mask)
    if bbox is None or bbox[2] <= 0 or bbox[3] <= 0:
        notes.count("ann_dropped", source, example=f"annotation {ann.id}")
        return None
    if had_mask and mask is None:
        notes.count("box_only", source, example=f"annotation {ann.id}")

    if ann.area is not None and ann.area > 0 and not changed:
        area = float(ann.area)
    elif isinstance(mask, list):
        area = rle_area(polygon_to_rle(mask, width, height))
    elif mask is not None:
        area = rle_area(mask)
    else:
        area = bbox[2] * bbox[3]
    return ParsedAnnotation(category=category, bbox=bbox, segmentation=mask, area=area, iscrowd=ann.iscrowd)
