"""The version spec (what a user asks for) and the version as the API shows it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.datasets.ingest.models import MAX_NAME_CHARS
from app.datasets.schemas import SplitCounts

ClassName = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resize(_Strict):
    width: int = Field(default=1008, ge=32, le=4096)
    height: int = Field(default=1008, ge=32, le=4096)
    mode: Literal["stretch", "letterbox"] = Field(
        default="stretch",
        description="stretch: squash to exactly width x height, as SAM 3's processor does; "
        "letterbox: fit within, keep the aspect ratio, pad with black.",
    )


class Preprocessing(_Strict):
    resize: Resize = Field(default_factory=Resize)
    auto_orient: bool = Field(default=True, description="Apply EXIF orientation to pixels and annotations.")
    filter_null: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of images without annotations to leave out (0..1)."
    )
    classes: dict[ClassName, ClassName | None] = Field(
        default_factory=dict,
        max_length=10_000,
        description="Remap by name: {'old': 'new'} renames (two names to one merges), {'old': null} drops.",
    )
    min_instance_px: float = Field(
        default=0.0,
        ge=0.0,
        le=1008.0,
        description="Drop instances narrower or shorter than this after resize.",
    )


class Split(_Strict):
    mode: Literal["keep", "ratio"] = Field(
        default="keep", description="keep the uploaded splits, or re-split"
    )
    train: float = Field(default=0.7, ge=0.0, le=1.0)
    valid: float = Field(default=0.2, ge=0.0, le=1.0)
    test: float = Field(default=0.1, ge=0.0, le=1.0)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        if self.mode == "ratio" and abs(self.train + self.valid + self.test - 1.0) > 1e-6:
            raise ValueError(f"split ratios must add up to 1 (got {self.train + self.valid + self.test:g})")
        return self


class Crop(_Strict):
    min_scale: float = Field(default=0.6, gt=0.0, le=1.0, description="Smallest share of each side kept.")


class Augmentation(_Strict):
    outputs_per_image: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Train images out per image in: the original plus N-1 augmented copies.",
    )
    flip_horizontal: bool = False
    flip_vertical: bool = False
    rotate90: bool = Field(default=False, description="Rotate by a random multiple of 90 degrees.")
    crop: Crop | None = Field(default=None, description="Random crop, resized back to the output size.")
    rotation_degrees: float = Field(
        default=0.0, ge=0.0, le=45.0, description="Random rotation within +-N degrees."
    )
    brightness: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Random brightness factor within 1+-N."
    )
    contrast: float = Field(default=0.0, ge=0.0, le=1.0)
    saturation: float = Field(default=0.0, ge=0.0, le=1.0)
    hue: float = Field(default=0.0, ge=0.0, le=0.5)
    blur_sigma: float = Field(
        default=0.0, ge=0.0, le=10.0, description="Gaussian blur up to this sigma (px)."
    )
    noise: float = Field(default=0.0, ge=0.0, le=0.5, description="Gaussian noise, std as a share of 255.")
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return self.outputs_per_image > 1


class VersionSpec(_Strict):
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    split: Split = Field(default_factory=Split)
    augmentation: Augmentation = Field(default_factory=Augmentation)


class VersionOut(BaseModel):
    id: uuid.UUID
    dataset_id: uuid.UUID
    number: int
    name: str = Field(description="'{dataset slug}/{number}', the Roboflow-style id of this version.")
    status: Literal["building", "ready", "failed"]
    progress: float
    spec: VersionSpec
    classes: list[str] = Field(
        description="The version's classes; category_id in its COCO files = index + 1."
    )
    splits: dict[str, SplitCounts]
    dropped: dict[str, Any]
    content_hash: str | None
    error: str | None
    created_at: datetime
    ready_at: datetime | None
