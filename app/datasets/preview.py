"""Draw an image's annotations over it, for the UI's image grid."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from pycocotools import mask as mask_utils

from app.images.decode import load_rgb

# Distinct, colour-blind-friendly-ish colours (Tableau 10); class_id picks one.
PALETTE = (
    (78, 121, 167), (242, 142, 43), (225, 87, 89), (118, 183, 178), (89, 161, 79),
    (237, 201, 72), (176, 122, 161), (255, 157, 167), (156, 117, 95), (186, 176, 172),
)  # fmt: skip


def class_colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[class_id % len(PALETTE)]


def _mask_at(
    segmentation: Any, width: int, height: int, scale: float, out_w: int, out_h: int
) -> np.ndarray | None:
    if not segmentation:
        return None
    if isinstance(segmentation, list):
        # Scale polygon points and rasterise at the preview size: cheaper than decoding at full size.
        canvas = PILImage.new("L", (out_w, out_h), 0)
        draw = ImageDraw.Draw(canvas)
        for part in segmentation:
            pts = (np.asarray(part, dtype=np.float64).reshape(-1, 2) * scale).tolist()
            if len(pts) >= 3:
                draw.polygon([tuple(p) for p in pts], fill=1)
        return np.asarray(canvas, dtype=bool)
    rle = dict(segmentation)
    if isinstance(rle.get("counts"), str):
        rle["counts"] = rle["counts"].encode()
    full = mask_utils.decode(rle)
    return np.asarray(PILImage.fromarray(full * 255).resize((out_w, out_h), PILImage.Resampling.NEAREST)) > 0


def render_preview(
    data: bytes, annotations: list[tuple[int, list[float], Any]], *, max_side: int = 1024, alpha: float = 0.45
) -> bytes:
    """`annotations` are (class_id, bbox xywh, segmentation) in original-image pixels. Returns PNG bytes."""
    img = load_rgb(data)
    width, height = img.size
    scale = min(1.0, max_side / max(width, height))
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    if scale < 1.0:
        img = img.resize((out_w, out_h), PILImage.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(img, dtype=np.float32).copy()
    for class_id, _bbox, segmentation in annotations:
        mask = _mask_at(segmentation, width, height, scale, out_w, out_h)
        if mask is not None and mask.any():
            colour = np.asarray(class_colour(class_id), dtype=np.float32)
            pixels[mask] = pixels[mask] * (1 - alpha) + colour * alpha
    out = PILImage.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for class_id, (x, y, w, h), _ in annotations:
        draw.rectangle(
            [x * scale, y * scale, (x + w) * scale, (y + h) * scale], outline=class_colour(class_id), width=2
        )
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()
