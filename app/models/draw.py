"""The image with its predicted masks drawn: each class its own colour, masks half-transparent, outlined."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from app.models.schemas import PredictResponse

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]  # fmt: skip


def overlay(
    image: Image.Image, result: PredictResponse, classes: list[str], image_format: str = "PNG"
) -> bytes:
    """The image with `result`'s masks (RLE) and boxes drawn, encoded as `image_format` (PNG or JPEG)."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    for p in result.predictions:
        if p.rle is None:
            continue
        tint = np.array(PALETTE[p.class_id % len(PALETTE)], dtype=np.float32)
        m = mask_utils.decode(p.rle | {"counts": p.rle["counts"].encode()}).astype(bool)
        base[m] = base[m] * 0.5 + tint * 0.5
    out = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(out)
    for p in result.predictions:
        colour = PALETTE[p.class_id % len(PALETTE)]
        x0, y0 = p.x - p.width / 2, p.y - p.height / 2
        pen.rectangle([x0, y0, x0 + p.width, y0 + p.height], outline=colour, width=2)
        pen.text((x0 + 2, y0 + 2), f"{p.class_} {p.confidence:.2f}", fill=colour)
    buf = io.BytesIO()
    out.save(buf, format=image_format)
    return buf.getvalue()
