from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import StreamingResponse

from app.core.deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from app.core.pagination import Page, PageDep
from app.models import service
from app.models.batch_router import router as batch_router
from app.models.predict_router import router as predict_router
from app.models.schemas import ModelOut

router = APIRouter(tags=["models"])


@router.get("/api/v1/models", response_model=Page[ModelOut])
def list_models(session: SessionDep, principal: CurrentPrincipal, params: PageDep) -> Page[ModelOut]:
    rows, total = service.page_models(session, principal.workspace_id, params)
    return params.page([service.describe(*row) for row in rows], total)


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
    model_id: uuid.UUID,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> StreamingResponse:
    """A zip of a directory that `transformers.Sam3Model.from_pretrained` loads, with processor files and card."""
    model, _, _, _ = service.get(session, principal.workspace_id, model_id)
    filename = f"{model.version_name.replace('/', '-')}-{str(model.id)[:8]}.zip"
    return StreamingResponse(
        service.download_stream(storage, model, settings),
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
    service.delete(session, storage, request.app.state.inference.evict, principal.workspace_id, model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api/v1/models/{model_id}/promote", response_model=ModelOut)
def promote_model(model_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> ModelOut:
    """Make this model its version's '{slug}/{number}' model (what Roboflow clients call), even though it scored
    below its base on the test split; until a newer model that did not is registered, or another is promoted.
    Idempotent."""
    return service.describe(*service.promote(session, principal.workspace_id, model_id))


# The predict routes sit here, in the order they always had (the OpenAPI document keeps it).
router.include_router(predict_router)
# Batch predictions' routes come after the models' own, as they always did (the OpenAPI document keeps its order).
router.include_router(batch_router)
