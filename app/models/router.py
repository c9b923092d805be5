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


@router.get(
    "/api/v1/models",
    summary="List models",
    description="Your workspace's models, newest first, each with its base model, version name, classes and test metrics.",
    response_model=Page[ModelOut],
)
def list_models(session: SessionDep, principal: CurrentPrincipal, params: PageDep) -> Page[ModelOut]:
    rows, total = service.page_models(session, principal.workspace_id, params)
    return params.page([service.describe(*row) for row in rows], total)


@router.get("/api/v1/models/{model_id}", summary="Get a model", response_model=ModelOut)
def get_model(model_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> ModelOut:
    """A model's base model and lineage, its version name (`slug/N`), classes, requested and resolved mode,
    hyperparameters with reasons, best validation summary, and `test` for the base (zero-shot) and the
    fine-tuned model; `regression` and `promoted`. 404 when it is not in your workspace."""
    return service.describe(*service.get(session, principal.workspace_id, model_id))


@router.get(
    "/api/v1/models/{model_id}/download",
    summary="Download a model",
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
    """A zip of a directory that `transformers.Sam3Model.from_pretrained` loads, with the processor files and
    the model card (streamed). 404 when it is not in your workspace; 503 when its base is not installed, 409
    when the base's weights changed (a decoder-mode model is stored as a delta on its base)."""
    model, _, _, _ = service.get(session, principal.workspace_id, model_id)
    filename = f"{model.version_name.replace('/', '-')}-{str(model.id)[:8]}.zip"
    return StreamingResponse(
        service.download_stream(storage, model, settings),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.delete("/api/v1/models/{model_id}", summary="Delete a model", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(
    model_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    storage: StorageDep,
    principal: CurrentPrincipal,
) -> Response:
    """Delete a model and its files; inference services free its memory. 204. 404 when it is not in your
    workspace; 409 while a batch prediction of it is queued or running."""
    service.delete(session, storage, request.app.state.inference.evict, principal.workspace_id, model_id)
    request.app.state.model_specs.forget(str(model_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api/v1/models/{model_id}/promote", summary="Promote a model", response_model=ModelOut)
def promote_model(model_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> ModelOut:
    """Make this model its version's `slug/N` model (what Roboflow's clients call) even though it scored below
    its base on the test split; until a newer model that did not is registered, or another is promoted.
    Idempotent. Answers the model. 404 when it is not in your workspace."""
    return service.describe(*service.promote(session, principal.workspace_id, model_id))


# The predict routes sit here, in the order they always had (the OpenAPI document keeps it).
router.include_router(predict_router)
# Batch predictions' routes come after the models' own, as they always did (the OpenAPI document keeps its order).
router.include_router(batch_router)
