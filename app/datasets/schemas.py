from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.datasets.ingest.models import MAX_NAME_CHARS


class DatasetCreate(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)

    @field_validator("name")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("the name must not be blank")
        return v


class DatasetUpdate(DatasetCreate):
    pass


class ClassOut(BaseModel):
    class_id: int
    name: str


class SplitCounts(BaseModel):
    images: int = 0
    annotations: int = 0


class DatasetOut(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime
    classes: list[ClassOut]
    image_count: int
    annotation_count: int
    splits: dict[str, SplitCounts]


class UploadResult(BaseModel):
    layout: str = Field(description="coco | roboflow_coco | odinw | images_only")
    added: dict[str, SplitCounts] = Field(description="Images and annotations added, per split.")
    duplicates_skipped: int = Field(
        description="Images already in the dataset (same SHA-256), not stored again."
    )
    classes_found: list[str]
    classes_added: list[str]
    warnings: list[str]


class ImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    file_name: str
    split: str
    width: int
    height: int
    format: str
    size_bytes: int
    sha256: str
    annotation_count: int = 0
    classes: list[str] = []


class AnnotationOut(BaseModel):
    id: uuid.UUID
    class_name: str
    class_id: int
    bbox: list[float]
    segmentation: Any
    area: float
    iscrowd: bool


class ImageDetail(ImageOut):
    annotations: list[AnnotationOut]


class Stats(BaseModel):
    min: float
    max: float
    mean: float
    median: float


class ClassHealth(BaseModel):
    name: str
    class_id: int
    instances: int
    images: int


class Health(BaseModel):
    splits: dict[str, SplitCounts]
    classes: list[ClassHealth]
    image_width: Stats | None
    image_height: Stats | None
    images_without_annotations: dict[str, int]
    instances_per_image: Stats | None
    instances_per_image_histogram: dict[str, int] = Field(
        description="Images by number of instances: '0', '1', '2-5', '6-10', '11-50', '51+'."
    )
    tiny_at_1008: int = Field(
        description="Instances that would be narrower or shorter than 4 px at 1008x1008."
    )
    tiny_threshold_px: float = 4.0
    warnings: list[str]
