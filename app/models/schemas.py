"""Models and predictions as the API shows them. Predictions take the shape of Roboflow's inference server,
so its users' code reads them as they are."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ModelOut(BaseModel):
    id: uuid.UUID
    name: str = Field(description="'{dataset slug}/{version number}' of the data it was trained on.")
    job_id: uuid.UUID
    version_id: uuid.UUID
    base_model: str
    base_model_description: str
    mode: str
    classes: list[str]
    hyperparameters: dict[str, Any]
    test_metrics: dict[str, Any] = Field(
        description="COCO results on the test split: 'base' (zero-shot) and 'fine_tuned', each with a summary "
        "and per-class AP."
    )
    checkpoint_sha256: str
    status: str
    created_at: datetime


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
    error: str | None
    results_url: str | None = Field(description="COCO results JSON, once succeeded.")
    created_at: datetime
    finished_at: datetime | None
