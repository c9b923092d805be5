"""Factories for test data: small COCO datasets zipped in the layouts samtune accepts."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(width: int, height: int, seed: int = 0, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(1, 1, 3), dtype=np.uint8)
    pixels = np.broadcast_to(base, (height, width, 3)).copy()
    pixels[: height // 2, : width // 3] = rng.integers(0, 255, size=3, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def jpeg_of(pixels: np.ndarray, orientation: int = 1, quality: int = 92) -> bytes:
    """`pixels` (HxWx3 uint8) as a JPEG, with an EXIF orientation tag when `orientation` is not 1."""
    img = Image.fromarray(pixels)
    buf = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    else:
        img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class CocoBuilder:
    """Builds one COCO annotations file; `add_image` returns its id, `add_box_polygon` an instance."""

    categories: list[str]
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    placeholder: str | None = None  # Roboflow's dataset-named parent category

    def add_image(self, file_name: str, width: int = 64, height: int = 48, seed: int | None = None) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        self.files[file_name] = jpeg_bytes(width, height, seed if seed is not None else image_id)
        return image_id

    def add_box_polygon(self, image_id: int, category: str, x: float, y: float, w: float, h: float) -> int:
        ann_id = len(self.annotations) + 1
        self.annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": self.category_id(category),
                "bbox": [x, y, w, h],
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                "area": w * h,
                "iscrowd": 0,
            }
        )
        return ann_id

    def category_id(self, name: str) -> int:
        # Ids start at 1 either way; Roboflow's placeholder takes id 0.
        return self.categories.index(name) + 1

    def to_json(self) -> dict:
        cats = []
        if self.placeholder:
            cats.append({"id": 0, "name": self.placeholder, "supercategory": "none"})
        for name in self.categories:
            cats.append(
                {"id": self.category_id(name), "name": name, "supercategory": self.placeholder or "none"}
            )
        return {"images": self.images, "annotations": self.annotations, "categories": cats}


def write_zip(path: Path, entries: dict[str, bytes | str | dict]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            if isinstance(data, dict):
                data = json.dumps(data)
            zf.writestr(name, data)
    return path


def simple_coco_zip(
    path: Path, n_images: int = 3, classes: tuple[str, ...] = ("cat", "dog"), seed: int = 0
) -> Path:
    """COCO layout: annotations.json at the root, images in images/."""
    coco = CocoBuilder(list(classes))
    for i in range(n_images):
        image_id = coco.add_image(f"img{i}.jpg", seed=seed * 1000 + i)
        coco.add_box_polygon(image_id, classes[i % len(classes)], 5, 5, 20, 15)
    entries: dict[str, bytes | str | dict] = {"annotations.json": coco.to_json()}
    entries.update({f"images/{name}": data for name, data in coco.files.items()})
    return write_zip(path, entries)


def roboflow_zip(
    path: Path, per_split: dict[str, int], classes: tuple[str, ...] = ("cat", "dog"), seed: int = 0
) -> Path:
    """Roboflow COCO export: {train,valid,test}/_annotations.coco.json with the placeholder category."""
    entries: dict[str, bytes | str | dict] = {}
    for split_i, (split, n) in enumerate(per_split.items()):
        coco = CocoBuilder(list(classes), placeholder="pets")
        for i in range(n):
            image_id = coco.add_image(f"{split}_{i}.jpg", seed=seed * 1000 + split_i * 100 + i)
            coco.add_box_polygon(image_id, classes[i % len(classes)], 4, 4, 30, 20)
            coco.add_box_polygon(image_id, classes[(i + 1) % len(classes)], 30, 20, 20, 20)
        entries[f"{split}/_annotations.coco.json"] = coco.to_json()
        entries.update({f"{split}/{name}": data for name, data in coco.files.items()})
    return write_zip(path, entries)
