"""Models and predictions as the API shows them. Predictions take the shape of Roboflow's inference server,
so its users' code reads them as they are."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.jobs.schemas import BaseVsFineTuned


class ModelOut(BaseModel):
    id: uuid.UUID
    version_name: str = Field(
        description="'{dataset slug}/{number}' of the data version it learned from; also its Roboflow model id."
    )
    job_id: uuid.UUID
    version_id: uuid.UUID
    base_model: str = Field(
        description="What it was fine-tuned from: a catalog base model, or a workspace model as "
        "'{slug}/{number} (model {id})'."
    )
    base_model_description: str
    base_model_id: uuid.UUID | None = Field(
        default=None, description="The workspace model it was fine-tuned from; null for a catalog base model."
    )
    lineage: list[str] = Field(
        default_factory=list,
        description="Its base model, then the base of that base, down to a catalog base model: "
        "['shapes/2 (model {id})', 'samtune/sam3-tiny-shapes'].",
    )
    requested_mode: str = Field(description="The training mode the job asked for: auto, decoder or full.")
    resolved_mode: str = Field(description="The mode it trained in: decoder or full.")
    classes: list[str]
    hyperparameters: dict[str, Any]
    best_valid: dict[str, float] | None = Field(description="The validation summary at the kept checkpoint.")
    test: BaseVsFineTuned
    checkpoint_sha256: str
    status: str
    regression: bool = Field(
        description="It scored below its base model on the test split (mask AP, figures in `test`): the version's "
        "'{slug}/{number}' id keeps naming the previous good model unless this one is promoted."
    )
    promoted: bool = Field(
        description="Made its version's '{slug}/{number}' model explicitly (POST /api/v1/models/{id}/promote)."
    )
    promoted_at: datetime | None = Field(description="When it was last promoted.")
    created_at: datetime

    # Deprecated names, kept for one release (docs/api.md, "Deprecated fields").
    name: str = Field(deprecated="use version_name", description="Deprecated: version_name.")
    mode: str = Field(deprecated="use resolved_mode", description="Deprecated: resolved_mode.")
    test_metrics: dict[str, Any] = Field(deprecated="use test", description="Deprecated: test.")


class Point(BaseModel):
    x: float
    y: float


class PredictionOut(BaseModel):
    x: float = Field(description="Box centre, original image pixels.")
    y: float
    width: float
    height: float
    confidence: float
    class_: str = Field(alias="class", serialization_alias="class")
    class_id: int
    detection_id: str
    points: list[Point] | None = None
    rle: dict[str, Any] | None = None

    model_config = {"populate_by_name": True}


class ImageSize(BaseModel):
    width: int
    height: int


class PredictResponse(BaseModel):
    inference_id: str
    time: float = Field(description="Seconds spent on the prediction, server side.")
    image: ImageSize
    predictions: list[PredictionOut]


class BatchPredictionOut(BaseModel):
    id: uuid.UUID
    model_id: uuid.UUID
    version_id: uuid.UUID
    split: str
    status: str = Field(description="queued, running, succeeded or failed")
    num_images: int
    num_detections: int
    iou_threshold: float = Field(description="Mask NMS threshold its predictions were merged with.")
    class_agnostic_nms: bool
    error: str | None
    results_url: str | None = Field(description="COCO results JSON, once succeeded.")
    created_at: datetime
    finished_at: datetime | None


# --- what a predict request carries -------------------------------------------------------------------------


class PredictOptions(BaseModel):
    # NaN and Infinity are refused (422) wherever a float is: a NaN box passed every comparison and failed later.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompts: list[str] | None = Field(default=None, description="Text prompts; default: the model's classes.")
    confidence: float = Field(default=0.5, ge=0, le=1)
    mask_format: Literal["polygon", "rle"] = "polygon"
    max_detections: int = Field(
        default=100, ge=1, le=1000, description="At most SAMTUNE_MAX_DETECTIONS (1000)."
    )
    iou_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Mask NMS: drop a mask overlapping a better one (1: keep all)."
    )
    class_agnostic_nms: bool = Field(default=False, description="NMS across prompts, not within each.")
    boxes: list[tuple[float, float, float, float]] | None = Field(
        default=None,
        description="Exemplar boxes, [x0, y0, x1, y1] in image pixels: find things like these (with each prompt, "
        "or alone). Multipart: a JSON string.",
    )

    @field_validator("boxes")
    @classmethod
    def _boxes(cls, value: list[tuple[float, float, float, float]] | None) -> list | None:
        for i, (x0, y0, x1, y1) in enumerate(value or []):
            if x1 <= x0 or y1 <= y0 or min(x0, y0) < 0:
                raise ValueError(
                    f"box {i} {[x0, y0, x1, y1]} is not [x0, y0, x1, y1] with x0 < x1, y0 < y1, >= 0"
                )
        return value


class PredictJSON(PredictOptions):
    image: str = Field(description="The image, base64-encoded (a data: URL is fine).")


# --- Roboflow's inference-server bodies (app/models/roboflow.py) ------------------------------------------


class ImageRef(BaseModel):
    type: str = "base64"
    value: str


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model_id: str
    image: ImageRef | list[ImageRef]
    api_key: str | None = None
    confidence: float = Field(default=0.4, ge=0, le=1)
    # Roboflow's clients may send null for "the server's default": 0.5, per class, no drawing.
    iou_threshold: float | None = Field(default=0.5, gt=0, le=1)
    class_agnostic_nms: bool | None = False
    visualize_predictions: bool | None = False
    class_filter: list[str] | None = None
    max_detections: int = Field(
        default=300, ge=1, le=1000, description="At most SAMTUNE_MAX_DETECTIONS (1000)."
    )
    response_mask_format: str | None = None


class AddModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_id: str
    api_key: str | None = None
