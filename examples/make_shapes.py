"""Writes examples/shapes-coco.zip: a small Roboflow-style COCO export (train/valid/test) of coloured
circles, squares and triangles with polygon masks, for trying samtune's upload by hand.

    .venv/bin/python examples/make_shapes.py
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
COLOURS = ((220, 50, 50), (40, 120, 220), (40, 170, 80))
SPLITS = {"train": 12, "valid": 4, "test": 2}


def _shape(kind: str, cx: float, cy: float, r: float) -> list[float]:
    if kind == "circle":
        pts = [
            (cx + r * math.cos(a), cy + r * math.sin(a))
            for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)
        ]
    elif kind == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return [round(v, 2) for p in pts for v in p]


def build(out: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for split, n in SPLITS.items():
            images, annotations = [], []
            for i in range(n):
                w, h = 320, 240
                # A soft gradient with mild noise: some texture, but a small file.
                ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(-60, 60, size=(1, 1, 3))
                noise = rng.normal(0, 6, size=(h, w, 3))
                img = Image.fromarray(np.clip(180 + ramp + noise, 0, 255).astype(np.uint8))
                draw = ImageDraw.Draw(img)
                for _ in range(int(rng.integers(1, 4))):
                    k = int(rng.integers(0, 3))
                    r = float(rng.uniform(15, 40))
                    cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
                    poly = _shape(CLASSES[k], cx, cy, r)
                    draw.polygon(list(zip(poly[::2], poly[1::2], strict=True)), fill=COLOURS[k])
                    xs, ys = poly[::2], poly[1::2]
                    box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": k + 1,
                                        "bbox": [round(v, 2) for v in box], "segmentation": [poly],
                                        "area": round(box[2] * box[3], 2), "iscrowd": 0})  # fmt: skip
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=85)
                name = f"{split}_{i:03d}.jpg"
                zf.writestr(f"{split}/{name}", buf.getvalue())
                images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
            # Roboflow's exports carry this placeholder parent category; samtune ignores it.
            categories = [{"id": 0, "name": "shapes", "supercategory": "none"}] + [
                {"id": k + 1, "name": c, "supercategory": "shapes"} for k, c in enumerate(CLASSES)
            ]
            doc = {"images": images, "annotations": annotations, "categories": categories}
            zf.writestr(f"{split}/_annotations.coco.json", json.dumps(doc))


if __name__ == "__main__":
    target = Path(__file__).with_name("shapes-coco.zip")
    build(target)
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")
