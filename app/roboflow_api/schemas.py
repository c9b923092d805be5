"""The request bodies the `roboflow` package sends (roboflow/core/workspace.py create_project,
roboflow/adapters/rfapi.py save_annotation and start_version_training). Fields samtune does not use are
accepted and ignored, as Roboflow's own API does, so the SDK's requests pass unchanged."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateProject(_Body):
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(default="object-detection", max_length=100)
    license: str | None = Field(default=None, max_length=100)
    annotation: str | None = Field(default=None, max_length=200)


class Annotate(_Body):
    annotationFile: str = Field(description="The annotation file's text (COCO JSON).")
    labelmap: Any = None


class TrainBody(_Body):
    speed: str | None = Field(
        default=None, max_length=50, description="Accepted; samtune has no speed presets."
    )
    checkpoint: str | None = Field(
        default=None, max_length=500, description="A model to continue from: samtune's base_model."
    )
    modelType: str | None = Field(
        default=None, max_length=500, description="A samtune base model's name, when given."
    )
    epochs: int | None = Field(default=None, ge=1, le=10_000)
