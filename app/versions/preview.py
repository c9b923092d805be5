"""A look at a version before it is built: a few training images as the build would write them (resized,
classes remapped) and their augmented copies, with the annotations moved along.

It runs the builder's own `process_image` on the plan's first training images, with a storage wrapper
that reads the real images and keeps what the build would write in memory, so the preview cannot drift
from what a build produces. Nothing is written.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import uuid
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.errors import Unprocessable
from app.core.storage import ObjectStorage
from app.datasets import service as datasets
from app.settings import Settings
from app.versions import repository
from app.versions.builder import process_image
from app.versions.plan import PlanError, PlannedImage, plan_version
from app.versions.schemas import VersionSpec

MAX_COPIES = 3  # augmented copies shown per image: enough to see the spread of the random choices
PREVIEW_SIDE = 384  # the pictures are for a grid of thumbnails, not for inspection at full size


class PreviewInstance(BaseModel):
    class_id: int = Field(description="Index into `classes`.")
    bbox: list[float] = Field(description="x, y, width, height in the output image's pixels.")
    segmentation: Any = Field(
        description="Polygons, or compressed RLE, in the output image's pixels; null: box only."
    )


class PreviewImage(BaseModel):
    source_image_id: uuid.UUID
    file_name: str = Field(description="The name the build would give this output.")
    augmented: bool
    width: int = Field(description="The output image's width, the frame of its annotations.")
    height: int
    image: str = Field(description="A data: URL of the output image, scaled down to at most 384 px a side.")
    instances: list[PreviewInstance]


class VersionPreview(BaseModel):
    classes: list[str]
    augmentation_enabled: bool
    images: list[PreviewImage]


class _ReadThrough:
    """Reads from the real storage; keeps writes in memory instead of storing them."""

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage
        self.written: dict[str, bytes] = {}

    def get_bytes(self, key: str) -> bytes:
        return self.storage.get_bytes(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.written[key] = data


def _thumbnail_url(jpeg: bytes) -> str:
    img = Image.open(io.BytesIO(jpeg))
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _pick(images: list[PlannedImage], count: int) -> list[PlannedImage]:
    """Training images first (only they are augmented), those with instances before empty ones."""
    ranked = sorted(images, key=lambda im: (im.split != "train", not im.instances))
    return [dataclasses.replace(im, augment_seeds=im.augment_seeds[:MAX_COPIES]) for im in ranked[:count]]


def preview_version(
    session: Session,
    storage: ObjectStorage,
    settings: Settings,
    workspace_id: uuid.UUID,
    dataset_id: uuid.UUID,
    spec: VersionSpec,
    count: int,
) -> VersionPreview:
    dataset = datasets.get_dataset(session, workspace_id, dataset_id)
    sources = repository.source_images(session, dataset.id)
    if not sources:
        raise Unprocessable(f"dataset {dataset.name!r} has no images yet: upload some to preview a version")
    try:
        plan = plan_version(repository.class_names(session, dataset.id), sources, spec)
    except PlanError as exc:
        raise Unprocessable(str(exc), source="preprocessing.classes") from None
    out: list[PreviewImage] = []
    for item in _pick(plan.images, count):
        capture = _ReadThrough(storage)
        result = process_image(item, spec, capture, "", settings)  # type: ignore[arg-type]
        for k, output in enumerate(result.outputs):
            out.append(
                PreviewImage(
                    source_image_id=item.source.id,
                    file_name=output.file_name,
                    augmented=k > 0,
                    width=output.width,
                    height=output.height,
                    image=_thumbnail_url(capture.written[f"{output.split}/{output.file_name}"]),
                    instances=[
                        PreviewInstance(
                            class_id=inst.class_id, bbox=list(inst.bbox), segmentation=inst.segmentation
                        )
                        for inst in output.instances
                    ],
                )
            )
    return VersionPreview(classes=plan.classes, augmentation_enabled=spec.augmentation.enabled, images=out)
