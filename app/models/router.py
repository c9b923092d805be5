from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from app.models import service
from app.models.batch_router import router as batch_router
from app.models.openapi import PREDICT_BODY, PREDICT_RESPONSES
from app.models.predict import answer
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
    filename = f"{model.version_name.replace('/', '-')}-{str(model.id)[:8]}.zip"
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
    "/api/v1/models/{model_id}/predict",
    response_model=PredictResponse,
    response_model_by_alias=True,
    openapi_extra=PREDICT_BODY,
    responses=PREDICT_RESPONSES,
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
    return await answer(request, settings, service.servable(model, version), visualize)


@router.post(
    "/api/v1/base-models/{owner}/{name}/predict",
    response_model=PredictResponse,
    response_model_by_alias=True,
    openapi_extra=PREDICT_BODY,
    responses=PREDICT_RESPONSES,
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
    return await answer(request, settings, service.base_servable(settings, f"{owner}/{name}"), visualize)


# Batch predictions' routes come after the models' own, as they always did (the OpenAPI document keeps its order).
router.include_router(batch_router)
