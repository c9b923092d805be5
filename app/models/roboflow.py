"""The routes of Roboflow's inference server, so that its clients (`inference-sdk`'s InferenceHTTPClient,
v1 and v0 modes) work against samtune with `api_url` pointed here.

A model's Roboflow-style id is `{dataset slug}/{version number}`: the newest model trained on that version.
The API key comes as Roboflow's clients send it: `api_key` in the JSON body or the query, or a Bearer header.
Images come as base64 only: a URL would make the server fetch what a client names (SSRF).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import transaction
from app.core.deps import presented_key
from app.core.errors import AppError, NotFound, Unprocessable
from app.datasets.tables import Dataset
from app.images.decode import load_rgb
from app.jobs.tables import TrainingJob
from app.keys import service as keys
from app.models import service
from app.models.schemas import PredictResponse
from app.models.tables import Model
from app.versions.tables import DatasetVersion

router = APIRouter(tags=["roboflow compatibility"])
TASK = "instance-segmentation"


class ImageRef(BaseModel):
    type: str = "base64"
    value: str


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_id: str
    image: ImageRef | list[ImageRef]
    api_key: str | None = None
    confidence: float = Field(default=0.4, ge=0, le=1)
    iou_threshold: float | None = Field(default=None, gt=0, le=1)
    class_filter: list[str] | None = None
    max_detections: int = Field(default=300, ge=1, le=1000)
    response_mask_format: str | None = None


class AddModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_id: str
    api_key: str | None = None


def _workspace(request: Request, session: Session, body_key: str | None) -> uuid.UUID:
    return keys.authenticate(session, body_key or presented_key(request)).workspace_id


def find(session: Session, workspace_id: uuid.UUID, model_id: str) -> tuple[Model, DatasetVersion]:
    """A model by its Roboflow-style id (`slug/version`) or its UUID."""
    stmt = (
        select(Model, DatasetVersion)
        .join(TrainingJob, TrainingJob.id == Model.job_id)
        .join(DatasetVersion, DatasetVersion.id == TrainingJob.version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(Model.workspace_id == workspace_id)
    )
    slug, _, number = model_id.partition("/")
    try:
        if not number:
            stmt = stmt.where(Model.id == uuid.UUID(model_id))
        # Version numbers are 32-bit in the database: a larger one failed there (500) instead of matching nothing.
        elif not 0 < int(number) < 2**31:
            raise ValueError(number)
        else:
            stmt = stmt.where(Dataset.slug == slug, DatasetVersion.number == int(number))
    except ValueError:
        raise NotFound(
            f"model {model_id!r} not found: use '{{dataset slug}}/{{version number}}' or a model id"
        ) from None
    row = session.execute(stmt.order_by(Model.created_at.desc()).limit(1)).first()
    if row is None:
        raise NotFound(f"model {model_id!r} not found in this workspace")
    return row[0], row[1]


def _describe(model: Model, version: DatasetVersion) -> dict[str, Any]:
    return {
        "model_id": model.name,
        "task_type": TASK,
        "batch_size": 1,
        "input_height": None,
        "input_width": None,
    }


def _decode(value: str) -> bytes:
    if value.startswith(("http://", "https://")):
        raise AppError("image URLs are not fetched by this server; send the image as base64", status_code=400,
                       source="image")  # fmt: skip
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        raise AppError("image is not valid base64", status_code=400, source="image") from None


def _predict(request: Request, model: Model, version: DatasetVersion, image_b64: str,
             *, confidence: float, max_detections: int, mask_format: str, prompts: list[str] | None) -> PredictResponse:  # fmt: skip
    settings = request.app.state.settings
    data = _decode(image_b64)
    if len(data) > settings.max_predict_bytes:
        raise AppError(
            f"the image is larger than {settings.max_predict_bytes} bytes", status_code=413, source="image"
        )
    picture = load_rgb(data, max_pixels=settings.max_image_pixels)
    response = service.predict(request.app.state.model_cache, model, picture, prompts, confidence=confidence,
                               max_detections=max_detections, mask_format=mask_format,
                               classes=list(version.classes or []))  # fmt: skip
    return response


def _registry(session: Session, workspace_id: uuid.UUID) -> dict[str, Any]:
    stmt = (
        select(Model, DatasetVersion)
        .join(TrainingJob, TrainingJob.id == Model.job_id)
        .join(DatasetVersion, DatasetVersion.id == TrainingJob.version_id)
        .where(Model.workspace_id == workspace_id)
        .order_by(Model.created_at)
    )
    seen: dict[str, dict[str, Any]] = {}
    for model, version in session.execute(stmt):
        seen[model.name] = _describe(model, version)
    return {"models": list(seen.values())}


@router.get("/model/registry")
def registry(request: Request) -> dict[str, Any]:
    """The models this key can use, as Roboflow's server lists its loaded ones."""
    with transaction(request.app.state.sessionmaker) as session:
        return _registry(session, _workspace(request, session, None))


@router.post("/model/add")
async def add_model(body: AddModel, request: Request) -> dict[str, Any]:
    """Load a model now (it is also loaded on first use); answers the registry."""

    def work() -> dict[str, Any]:
        with transaction(request.app.state.sessionmaker) as session:
            workspace = _workspace(request, session, body.api_key)
            model, _ = find(session, workspace, body.model_id)
            cache = request.app.state.model_cache
            cache.get(
                str(model.id), lambda: cache.fetch(model.id, model.checkpoint_key, model.checkpoint_sha256)
            )
            return _registry(session, workspace)

    return await request.app.state.model_cache.run(work)


@router.post("/infer/instance_segmentation")
async def infer_instance_segmentation(body: InferRequest, request: Request) -> Any:
    """Roboflow's v1 request body; one response per image (a list when a list was sent)."""
    mask_format = {"rle": "rle", None: "polygon", "polygon": "polygon"}.get(body.response_mask_format)
    if mask_format is None:
        raise Unprocessable(f"response_mask_format {body.response_mask_format!r} is not supported: polygon or rle",
                            source="response_mask_format")  # fmt: skip
    images = body.image if isinstance(body.image, list) else [body.image]
    for ref in images:
        if ref.type != "base64":
            raise AppError(f"image type {ref.type!r} is not accepted here: send base64", status_code=400,
                           source="image.type")  # fmt: skip

    def work() -> list[dict[str, Any]]:
        with transaction(request.app.state.sessionmaker) as session:
            model, version = find(session, _workspace(request, session, body.api_key), body.model_id)
        out = []
        for ref in images:
            r = _predict(request, model, version, ref.value, confidence=body.confidence,
                         max_detections=body.max_detections, mask_format=mask_format,
                         prompts=body.class_filter)  # fmt: skip
            out.append(r.model_dump(by_alias=True, exclude_none=True))
        return out

    results = await request.app.state.model_cache.run(work)
    return results if isinstance(body.image, list) else results[0]


# The route reads its body and query by hand (Roboflow's clients send a bare base64 body, any content type);
# without this the OpenAPI document showed neither, and no client built from it could call the route.
_V0_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": "api_key", "in": "query", "schema": {"type": "string"}, "description": "Or a Bearer header."},
        {"name": "confidence", "in": "query", "description": "0-1, or 0-100 as a percentage (Roboflow's).",
         "schema": {"type": "number", "minimum": 0, "maximum": 100, "default": 40}},
        {"name": "max_detections", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                              "default": 300}},
        {"name": "response_mask_format", "in": "query", "schema": {"type": "string", "enum": ["polygon", "rle"]}},
    ],
    "requestBody": {
        "required": True,
        "description": "The image, base64-encoded (Roboflow's clients send it as x-www-form-urlencoded).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}  # fmt: skip


@router.post("/{project}/{version}", openapi_extra=_V0_OPENAPI)
async def infer_v0(project: str, version: str, request: Request) -> dict[str, Any]:
    """Roboflow's hosted-API form: the base64 image is the body, options are query parameters."""
    params = request.query_params
    raw = (await request.body()).decode("ascii", errors="replace").strip()
    if not raw:
        raise AppError("the request body must be the base64-encoded image", status_code=400, source="body")
    try:
        confidence = float(params.get("confidence", 40))
        max_detections = int(params.get("max_detections", 300))
    except ValueError:
        raise Unprocessable("confidence and max_detections must be numbers") from None
    # The same bounds as the JSON routes (nan, inf, negatives and huge counts were accepted here).
    if not 0 <= confidence <= 100:
        raise Unprocessable(f"confidence {confidence} is not in 0-1 (or 0-100, percent)", source="confidence")
    if not 1 <= max_detections <= 1000:
        raise Unprocessable(f"max_detections {max_detections} is not in 1-1000", source="max_detections")
    confidence /= 100 if confidence > 1 else 1
    mask_format = "rle" if params.get("response_mask_format") == "rle" else "polygon"

    def work() -> dict[str, Any]:
        with transaction(request.app.state.sessionmaker) as session:
            model, ver = find(
                session, _workspace(request, session, params.get("api_key")), f"{project}/{version}"
            )
        r = _predict(request, model, ver, raw, confidence=confidence, max_detections=max_detections,
                     mask_format=mask_format, prompts=None)  # fmt: skip
        return r.model_dump(by_alias=True, exclude_none=True)

    return await request.app.state.model_cache.run(work)
