"""The native predict routes: a fine-tuned model's and a base model's. The API serves them (forwarding the work
to the inference tier), and so does an inference service, for clients that call it directly with their key."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.core.deps import CurrentPrincipal, SettingsDep, own_session
from app.core.short_cache import ShortCache
from app.inference.calls import ModelSpec
from app.models import service
from app.models.openapi import PREDICT_BODY, PREDICT_RESPONSES
from app.models.predict import answer
from app.models.schemas import PredictResponse

router = APIRouter(tags=["models"])


@router.post(
    "/api/v1/models/{model_id}/predict",
    summary="Predict with a model",
    operation_id="predict_with_model",
    response_model=PredictResponse,
    response_model_by_alias=True,
    openapi_extra=PREDICT_BODY,
    responses=PREDICT_RESPONSES,
)
async def predict(
    model_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    visualize: bool = False,
) -> Any:
    """Segment every instance of each prompt in an image. Multipart (`image` file, repeated `prompts`,
    `confidence`, `mask_format`, `max_detections`, `iou_threshold`, `class_agnostic_nms`, `boxes`) or JSON
    with a base64 `image`; without prompts, the model's classes. The answer has the shape of Roboflow's
    inference server: box centre and size in the original image's pixels, one polygon (or RLE) per instance;
    `?visualize=true` answers the image with the masks drawn (PNG). 404 unknown model, 413 body or image over
    the limit, 415 neither multipart nor JSON, 422 not an image or an option over its limit, 503 no inference
    service could answer (safe to retry)."""
    # Remembered for seconds (app/core/short_cache.py; a deletion through this process forgets it), else looked
    # up in one trip through the thread pool, in a transaction of its own: a `SessionDep` would cost two more
    # (opening and closing it), each a measurable share of a small model's predict latency.
    specs: ShortCache[ModelSpec] = request.app.state.model_specs
    spec = specs.get((principal.workspace_id, model_id))
    if spec is None:
        spec = await run_in_threadpool(_model_spec, request, principal.workspace_id, model_id)
        if spec.sha256 is not None:  # a model still being made is asked again next time
            specs.put((principal.workspace_id, model_id), spec.key, spec)
    return await answer(request, settings, spec, visualize)


def _model_spec(request: Request, workspace_id: uuid.UUID, model_id: uuid.UUID) -> ModelSpec:
    with own_session(request) as session:
        model, _, version, _ = service.get(session, workspace_id, model_id)
        return service.model_spec(model, version)


@router.post(
    "/api/v1/base-models/{owner}/{name}/predict",
    summary="Predict with a base model",
    operation_id="predict_with_base_model",
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
    before training: same request, answer and errors as a fine-tuned model's predict. Default prompts: the
    classes its card lists, if any. 422 for an unknown base model; 503 for one not downloaded yet."""
    # The catalog reads the disk (the bundled model's card, the hub cache): remembered for seconds too.
    specs: ShortCache[ModelSpec] = request.app.state.model_specs
    spec = specs.get(("base", owner, name))
    if spec is None:
        spec = service.base_spec(settings, f"{owner}/{name}")
        specs.put(("base", owner, name), spec.key, spec)
    return await answer(request, settings, spec, visualize)
