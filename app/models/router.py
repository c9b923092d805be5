from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep, TasksDep
from app.core.errors import AppError, Conflict, PayloadTooLarge, Unprocessable
from app.core.storage import iter_object
from app.images.decode import load_rgb
from app.jobs import base_models
from app.models import draw, service
from app.models.schemas import BatchPredictionOut, ModelOut, PredictResponse
from app.models.tables import BatchPrediction
from app.settings import Settings

router = APIRouter(tags=["models"])


@router.get("/api/v1/models", response_model=list[ModelOut])
def list_models(session: SessionDep, principal: CurrentPrincipal) -> list[ModelOut]:
    return [service.describe(*row) for row in service.list_models(session, principal.workspace_id)]


@router.get("/api/v1/models/{model_id}", response_model=ModelOut)
def get_model(model_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> ModelOut:
    """Base model, data version, hyperparameters, and test metrics for the base and the fine-tuned model."""
    return service.describe(*service.get(session, principal.workspace_id, model_id))


@router.get(
    "/api/v1/models/{model_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def download_model(
    model_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> StreamingResponse:
    """A zip of a directory that `transformers.Sam3Model.from_pretrained` loads, with processor files and card."""
    model, _, _, _ = service.get(session, principal.workspace_id, model_id)
    filename = f"{model.name.replace('/', '-')}-{str(model.id)[:8]}.zip"
    return StreamingResponse(
        service.download_stream(storage, model),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.delete("/api/v1/models/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(
    model_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    storage: StorageDep,
    principal: CurrentPrincipal,
) -> Response:
    service.delete(session, storage, request.app.state.model_cache, principal.workspace_id, model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class PredictOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[str] | None = Field(default=None, description="Text prompts; default: the model's classes.")
    confidence: float = Field(default=0.5, ge=0, le=1)
    mask_format: Literal["polygon", "rle"] = "polygon"
    max_detections: int = Field(default=100, ge=1, le=1000)
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


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "prompts": {"type": "array", "items": {"type": "string"}},
                        "confidence": {"type": "number", "default": 0.5},
                        "mask_format": {"type": "string", "enum": ["polygon", "rle"]},
                        "max_detections": {"type": "integer", "default": 100},
                        "boxes": {"type": "string", "description": "JSON: [[x0, y0, x1, y1], ...]"},
                    },
                }
            },
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}


def _invalid(exc: ValidationError) -> Unprocessable:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    return Unprocessable(f"{field}: {err['msg']}", source=field)


async def _read_request(request: Request, max_bytes: int) -> tuple[bytes, PredictOptions]:
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("image")
        if not isinstance(upload, StarletteUpload):
            raise Unprocessable("image: send the image as a file field named 'image'", source="image")
        data = await upload.read(max_bytes + 1)
        raw: dict[str, Any] = {
            k: form.get(k) for k in ("confidence", "mask_format", "max_detections") if k in form
        }
        if "prompts" in form:
            raw["prompts"] = [str(v) for v in form.getlist("prompts")]
        if "boxes" in form:
            try:
                raw["boxes"] = json.loads(str(form.get("boxes")))
            except ValueError:
                raise Unprocessable("boxes: not JSON; send [[x0, y0, x1, y1], ...]", source="boxes") from None
        try:
            return data, PredictOptions.model_validate(raw)
        except ValidationError as exc:
            raise _invalid(exc) from None
    if kind.startswith("application/json"):
        try:
            body = PredictJSON.model_validate_json(await request.body())
        except ValidationError as exc:
            raise _invalid(exc) from None
        value = body.image.partition(",")[2] if body.image.startswith("data:") else body.image
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Unprocessable("image: not valid base64", source="image") from None
        return data, PredictOptions(**body.model_dump(exclude={"image"}))
    raise AppError("send multipart/form-data (an 'image' file) or application/json (a base64 'image')",
                   status_code=415)  # fmt: skip


def _predict_to_bytes(
    cache: Any, key: str, locate: Callable[[], Any], data: bytes, options: PredictOptions,
    classes: list[str], visualize: bool, max_pixels: int,
) -> tuple[bytes, str, str]:  # fmt: skip
    """Decode, predict and encode in one worker-thread hop: each hop to the thread pool and back costs about
    as much as the tiny model's post-processing, and the answer is serialised once (FastAPI would validate the
    response model again before serialising it). Returns (body, media type, Server-Timing header)."""
    t0 = time.perf_counter()
    picture = load_rgb(data, max_pixels=max_pixels)
    t1 = time.perf_counter()
    result = service.predict_with(
        cache, key, locate, picture, options.prompts, confidence=options.confidence,
        max_detections=options.max_detections, mask_format="rle" if visualize else options.mask_format,
        classes=classes, boxes=options.boxes,
    )  # fmt: skip
    t2 = time.perf_counter()
    if visualize:
        body, media = draw.overlay(picture, result, classes), "image/png"
    else:
        body, media = result.model_dump_json(by_alias=True).encode(), "application/json"
    t3 = time.perf_counter()
    timing = f"decode;dur={(t1 - t0) * 1e3:.2f}, predict;dur={(t2 - t1) * 1e3:.2f}, encode;dur={(t3 - t2) * 1e3:.2f}"
    return body, media, timing


async def _answer(
    request: Request,
    settings: Settings,
    key: str,
    locate: Callable[[], Any],
    classes: list[str],
    visualize: bool,
) -> Response:
    """The part both predict routes share: read the request, decode the image, predict with the model that
    `key` names in the cache (`locate` finds its files the first time), answer JSON or a PNG."""
    data, options = await _read_request(request, settings.max_predict_bytes)
    if len(data) > settings.max_predict_bytes:
        raise PayloadTooLarge(f"the image is larger than {settings.max_predict_bytes} bytes", source="image")
    if not data:
        raise Unprocessable("image: the file is empty", source="image")
    cache = request.app.state.model_cache
    body, media, timing = await cache.run(
        _predict_to_bytes, cache, key, locate, data, options, classes, visualize, settings.max_image_pixels
    )
    return Response(body, media_type=media, headers={"Server-Timing": timing})


_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "JSON, or the image with masks (?visualize=true)"}
}


@router.post(
    "/api/v1/models/{model_id}/predict",
    response_model=PredictResponse,
    response_model_by_alias=True,
    openapi_extra=_PREDICT_BODY,
    responses=_PREDICT_RESPONSES,
)
async def predict(
    model_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    visualize: bool = False,
) -> Any:
    """Segment every instance of each prompt. The answer has the shape of Roboflow's inference server: box
    centre and size in the original image's pixels, one polygon (or RLE) per instance. Multipart (`image`
    file, repeated `prompts`, `confidence`, `mask_format`, `max_detections`, `boxes`) or JSON with a base64
    `image`. `?visualize=true` answers the image with the masks drawn (PNG)."""
    model, _, version, _ = await run_in_threadpool(service.get, session, principal.workspace_id, model_id)
    cache = request.app.state.model_cache
    return await _answer(
        request, settings, str(model.id),
        lambda: cache.fetch(model.id, model.checkpoint_key, model.checkpoint_sha256),
        list(version.classes or []), visualize,
    )  # fmt: skip


@router.post(
    "/api/v1/base-models/{owner}/{name}/predict",
    response_model=PredictResponse,
    response_model_by_alias=True,
    openapi_extra=_PREDICT_BODY,
    responses=_PREDICT_RESPONSES,
)
async def predict_base(
    owner: str,
    name: str,
    request: Request,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    visualize: bool = False,
) -> Any:
    """Zero-shot prediction with a base model (e.g. `samtune/sam3-tiny-shapes`, `facebook/sam3`), to try it
    before training: same request and answer as a fine-tuned model's predict. Default prompts: the classes
    its card lists, if any."""
    base = base_models.resolve(settings, f"{owner}/{name}")
    return await _answer(
        request, settings, f"base:{base.name}", lambda: base.location, base_models.classes(base), visualize
    )


def _batch_out(request: Request, batch: BatchPrediction) -> BatchPredictionOut:
    url = (
        str(request.url_for("batch_prediction_results", batch_id=batch.id))
        if batch.status == "succeeded"
        else None
    )
    return BatchPredictionOut(
        id=batch.id, model_id=batch.model_id, version_id=batch.version_id, split=batch.split, status=batch.status,
        num_images=batch.num_images, num_detections=batch.num_detections, error=batch.error, results_url=url,
        created_at=batch.created_at, finished_at=batch.finished_at,
    )  # fmt: skip


@router.post(
    "/api/v1/models/{model_id}/predict-version/{version_id}",
    response_model=BatchPredictionOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def predict_version(
    model_id: uuid.UUID,
    version_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    tasks: TasksDep,
    principal: CurrentPrincipal,
    split: Literal["train", "valid", "test"] = "test",
) -> BatchPredictionOut:
    """Predict every image of a version's split in the background (a worker on the `gpu` queue); poll the
    batch, then download its COCO results JSON (every class asked of every image, best 100 per image)."""
    batch = service.create_batch(session, tasks, principal.workspace_id, model_id, version_id, split)
    return _batch_out(request, batch)


@router.get("/api/v1/batch-predictions/{batch_id}", response_model=BatchPredictionOut)
def get_batch_prediction(
    batch_id: uuid.UUID, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> BatchPredictionOut:
    return _batch_out(request, service.get_batch(session, principal.workspace_id, batch_id))


@router.get(
    "/api/v1/batch-predictions/{batch_id}/results",
    name="batch_prediction_results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}}, 409: {"description": "Not finished"}},
)
def batch_prediction_results(
    batch_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> StreamingResponse:
    """COCO results JSON: [{image_id, category_id, bbox (xywh), score, segmentation (RLE)}], ids as in the
    version's `_annotations.coco.json`, so pycocotools' COCOeval reads it as it is."""
    batch = service.get_batch(session, principal.workspace_id, batch_id)
    if batch.status != "succeeded" or not batch.result_key:
        raise Conflict(
            f"batch prediction {batch_id} is {batch.status}" + (f": {batch.error}" if batch.error else "")
        )
    return StreamingResponse(iter_object(storage, batch.result_key), media_type="application/json")
