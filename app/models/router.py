from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from app.core.errors import PayloadTooLarge
from app.datasets.ingest.images import load_rgb
from app.models import service
from app.models.schemas import ModelOut, PredictResponse

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


@router.post(
    "/api/v1/models/{model_id}/predict", response_model=PredictResponse, response_model_by_alias=True
)
async def predict(
    model_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    image: Annotated[UploadFile, File(description="The image (JPEG, PNG, WebP, ...).")],
    prompts: Annotated[
        list[str] | None, Form(description="Text prompts (repeat the field); default: the model's classes.")
    ] = None,
    confidence: Annotated[float, Form(ge=0, le=1)] = 0.5,
    mask_format: Annotated[str, Form(description="polygon or rle")] = "polygon",
    max_detections: Annotated[int, Form(ge=1, le=1000)] = 100,
) -> PredictResponse:
    """Segment every instance of each prompt. The answer has the shape of Roboflow's inference server:
    box centre and size in the original image's pixels, one polygon (or RLE) per instance."""
    model, _, version, _ = await run_in_threadpool(service.get, session, principal.workspace_id, model_id)
    data = await image.read(settings.max_predict_bytes + 1)
    if len(data) > settings.max_predict_bytes:
        raise PayloadTooLarge(f"the image is larger than {settings.max_predict_bytes} bytes", source="image")
    picture = await run_in_threadpool(load_rgb, data, max_pixels=settings.max_image_pixels)
    classes = list(version.classes or [])
    return await run_in_threadpool(
        service.predict, request.app.state.model_cache, model, picture, prompts,
        confidence=confidence, max_detections=max_detections, mask_format=mask_format, classes=classes,
    )  # fmt: skip
