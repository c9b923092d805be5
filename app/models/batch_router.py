"""The routes of batch predictions: one asks for a model over a version's split (a worker on the `gpu` queue
runs it: app/models/batches.py), the others poll it and fetch its COCO results."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import StreamingResponse

from app.core.deps import CurrentPrincipal, SessionDep, StorageDep, TasksDep
from app.core.pagination import Page, PageDep
from app.core.storage import iter_object
from app.models import service
from app.models.schemas import BatchPredictionOut
from app.models.tables import BatchPrediction
from trainer.predict import DEFAULT_IOU_THRESHOLD

router = APIRouter()  # tagged "models" by app/models/router.py, which includes it


def _batch_out(request: Request, batch: BatchPrediction) -> BatchPredictionOut:
    return service.describe_batch(batch, str(request.url_for("batch_prediction_results", batch_id=batch.id)))


@router.post(
    "/api/v1/models/{model_id}/predict-version/{version_id}",
    summary="Start a batch prediction",
    operation_id="create_batch_prediction",
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
    iou_threshold: Annotated[float, Query(gt=0, le=1)] = DEFAULT_IOU_THRESHOLD,
    class_agnostic_nms: bool = False,
) -> BatchPredictionOut:
    """Predict every image of a version's `split` in the background (a worker on the `gpu` queue). 202 with
    the batch; poll it, then download its COCO results JSON (every class asked of every image, best 100 per
    image). Duplicate masks are merged as on the predict routes (`iou_threshold`; 1 keeps every mask). 404 for
    a model not in your workspace; 422 for a version that is not ready or a split without images."""
    batch = service.create_batch(session, tasks, principal.workspace_id, model_id, version_id, split,
                                 iou_threshold=iou_threshold, class_agnostic_nms=class_agnostic_nms)  # fmt: skip
    return _batch_out(request, batch)


@router.get(
    "/api/v1/batch-predictions",
    summary="List batch predictions",
    description="Your workspace's batch predictions, newest first, optionally only one model's (`model_id`).",
    response_model=Page[BatchPredictionOut],
)
def list_batch_predictions(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    params: PageDep,
    model_id: Annotated[uuid.UUID | None, Query(description="Only this model's batch predictions.")] = None,
) -> Page[BatchPredictionOut]:
    """The workspace's batch predictions, newest first."""
    batches, total = service.page_batches(session, principal.workspace_id, params, model_id=model_id)
    return params.page([_batch_out(request, b) for b in batches], total)


@router.get(
    "/api/v1/batch-predictions/{batch_id}",
    summary="Get a batch prediction",
    response_model=BatchPredictionOut,
)
def get_batch_prediction(
    batch_id: uuid.UUID, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> BatchPredictionOut:
    """A batch prediction's status, counts and, once it succeeded, `results_url`. 404 when it is not in your
    workspace."""
    return _batch_out(request, service.get_batch(session, principal.workspace_id, batch_id))


@router.get(
    "/api/v1/batch-predictions/{batch_id}/results",
    summary="Download batch prediction results",
    operation_id="get_batch_prediction_results",
    name="batch_prediction_results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}}, 409: {"description": "Not finished"}},
)
def batch_prediction_results(
    batch_id: uuid.UUID, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> StreamingResponse:
    """COCO results JSON: `[{image_id, category_id, bbox (xywh), score, segmentation (RLE)}]`, ids as in the
    version's `_annotations.coco.json`, so pycocotools' COCOeval reads it as it is. 404 when the batch is not
    in your workspace; 409 until it has succeeded."""
    key = service.batch_results_key(session, principal.workspace_id, batch_id)
    return StreamingResponse(iter_object(storage, key), media_type="application/json")
