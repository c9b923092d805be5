"""The routes of Roboflow's inference server, so that its clients (`inference-sdk`'s InferenceHTTPClient,
v1 and v0 modes) work against samtune with `api_url` pointed here.

A model's Roboflow-style id is `{dataset slug}/{version number}`: the newest model trained on that version.
The API key comes as Roboflow's clients send it: `api_key` in the JSON body or the query, or a Bearer header.
Images come as base64 only: a URL would make the server fetch what a client names (SSRF).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.deps import AUTH_SCHEMES, SessionDep, authenticate_key, presented_key
from app.core.errors import AppError, Unprocessable
from app.core.limits import charge_after_body
from app.core.openapi import roboflow_operation_id
from app.inference.calls import ModelSpec, PredictCall
from app.keys import service as keys
from app.keys.service import Principal
from app.models import bodies, service
from app.models.openapi import HOSTED_FORM
from app.models.schemas import AddModel, InferRequest, PredictOptions
from trainer.predict import DEFAULT_IOU_THRESHOLD

# The key may also come in the JSON body (`api_key`), read by each route: the schemes are listed for the OpenAPI
# document. Operation ids are prefixed so that they never collide with samtune's own (`roboflow_add_model`).
router = APIRouter(
    tags=["roboflow compatibility"],
    dependencies=AUTH_SCHEMES,
    generate_unique_id_function=roboflow_operation_id,
)
# Registered after every other router (app/main.py): its `/{project}/{version}` matches any two-segment POST.
hosted_router = APIRouter(
    tags=["roboflow compatibility"],
    dependencies=AUTH_SCHEMES,
    generate_unique_id_function=roboflow_operation_id,
)
TASK = "instance-segmentation"


async def _caller(request: Request, body_key: str | None) -> Principal:
    """The key from the body, the query or a Bearer header, checked as every key is (remembered for
    SAMTUNE_AUTH_CACHE_SECONDS: a prediction makes no database trip for it)."""
    return await authenticate_key(request, keys.required(body_key or presented_key(request)))


def _registry(session: Session, workspace_id: uuid.UUID) -> dict[str, Any]:
    listed = [
        {"model_id": name, "task_type": TASK, "batch_size": 1, "input_height": None, "input_width": None}
        for name in service.version_names(session, workspace_id)
    ]
    return {"models": listed}


def _spec(session: Session, workspace_id: uuid.UUID, reference: str) -> ModelSpec:
    model, _, version, _ = service.by_reference(session, workspace_id, reference)
    return service.model_spec(model, version)


def _options(*, confidence: float, max_detections: int, mask_format: Literal["polygon", "rle"], prompts: list[str] | None,
             iou_threshold: float | None, class_agnostic_nms: bool | None) -> PredictOptions:  # fmt: skip
    return PredictOptions(
        prompts=prompts, confidence=confidence, max_detections=max_detections, mask_format=mask_format,
        iou_threshold=iou_threshold if iou_threshold is not None else DEFAULT_IOU_THRESHOLD,
        class_agnostic_nms=bool(class_agnostic_nms),
    )  # fmt: skip


@router.get("/model/registry", summary="Roboflow: list models")
async def registry(request: Request, session: SessionDep) -> dict[str, Any]:
    """The models this key can use, as Roboflow's inference server lists its loaded ones: `{models:
    [{model_id: slug/N, task_type, ...}]}`. The key comes as `?api_key=` or a Bearer header. 401 without a
    valid key."""
    principal = await _caller(request, None)
    return await run_in_threadpool(_registry, session, principal.workspace_id)


@router.post("/model/add", summary="Roboflow: load a model")
async def add_model(body: AddModel, request: Request, session: SessionDep) -> dict[str, Any]:
    """Load a model now (it is also loaded on first use), as `inference-sdk` does before inferring; answers
    the registry. The key may also come in the body (`api_key`). 401 without a valid key, 404 for a `model_id`
    (`slug/N` or a model id) not in your workspace, 503 when no inference service could load it."""

    def look_up(workspace: uuid.UUID) -> tuple[ModelSpec, dict[str, Any]]:
        return _spec(session, workspace, body.model_id), _registry(session, workspace)

    principal = await _caller(request, body.api_key)
    await charge_after_body(request, principal)  # the key may have come in the body: counted once it is read
    spec, listed = await run_in_threadpool(look_up, principal.workspace_id)
    await request.app.state.inference.load(spec)
    return listed


@router.post("/infer/instance_segmentation", summary="Roboflow: instance segmentation")
async def infer_instance_segmentation(body: InferRequest, request: Request, session: SessionDep) -> Any:
    """Roboflow's v1 request body (`model_id`, `image` as `{type: base64, value}` or a list of them,
    `confidence`, `iou_threshold`, `class_agnostic_nms`, `class_filter`, `max_detections`,
    `response_mask_format`, `visualize_predictions`, `api_key`); one answer per image, a list when a list was
    sent, in Roboflow's shape. Errors are problem+json with Roboflow's `error` member: 400 an image that is
    not base64 (URLs are never fetched), 401, 404 unknown model, 413, 422 a limit, 503 no inference
    service."""
    formats: dict[str | None, Literal["polygon", "rle"]] = {
        "rle": "rle",
        None: "polygon",
        "polygon": "polygon",
    }
    mask_format = formats.get(body.response_mask_format)
    if mask_format is None:
        raise Unprocessable(f"response_mask_format {body.response_mask_format!r} is not supported: polygon or rle",
                            source="response_mask_format")  # fmt: skip
    images = body.image if isinstance(body.image, list) else [body.image]
    for ref in images:
        if ref.type != "base64":
            raise AppError(f"image type {ref.type!r} is not accepted here: send base64", status_code=400,
                           source="image.type")  # fmt: skip
    principal = await _caller(request, body.api_key)
    await charge_after_body(request, principal)  # the key may have come in the body: counted once it is read
    spec = await run_in_threadpool(_spec, session, principal.workspace_id, body.model_id)
    # Every limit is checked, and every image decoded from base64 and measured from its header, before the first
    # is predicted: a refusal leaves nothing half-done, and it does not wait its turn on the inference thread.
    settings = request.app.state.settings
    if len(images) > settings.max_infer_images:
        raise Unprocessable(f"image: {len(images)} images is more than the limit of {settings.max_infer_images} per "
                            "request (SAMTUNE_MAX_INFER_IMAGES)", source="image")  # fmt: skip
    bodies.check_prompts(body.class_filter, settings, source="class_filter")
    if "max_detections" in body.model_fields_set:
        bodies.check_max_detections(body.max_detections, settings)
    else:  # the default, under a limit set lower than it
        body.max_detections = min(body.max_detections, settings.max_detections)
    datas = await run_in_threadpool(
        lambda: [bodies.roboflow_image(ref.value, settings, visualize=bool(body.visualize_predictions))
                 for ref in images]
    )  # fmt: skip

    call = PredictCall(
        model=spec,
        options=_options(confidence=body.confidence, max_detections=body.max_detections, mask_format=mask_format,
                         prompts=body.class_filter, iou_threshold=body.iou_threshold,
                         class_agnostic_nms=body.class_agnostic_nms),
        output="roboflow",
        visualize=bool(body.visualize_predictions),
    )  # fmt: skip
    # The images of one request are asked together: the inference tier batches them into one forward.
    answers = await asyncio.gather(*(request.app.state.inference.predict(call, data) for data in datas))
    failed = next((a for a in answers if a.status != 200), None)
    if failed is not None:
        return failed.response()
    if not isinstance(body.image, list):
        return answers[0].response()
    return Response(b"[" + b",".join(a.body for a in answers) + b"]", media_type="application/json")


@hosted_router.post(
    "/{project}/{version}", summary="Roboflow: predict (hosted form)", openapi_extra=HOSTED_FORM
)
async def infer_v0(project: str, version: str, request: Request, session: SessionDep) -> Response:
    """Roboflow's hosted-API form, `POST /{project}/{version}`: the image is the body (base64), or a multipart
    `file` field as the `roboflow` package's `model.predict(path)` sends it; options are query parameters
    (`api_key`, `confidence`, `overlap`, `class_agnostic_nms`, `visualize_predictions`,
    `response_mask_format`). Confidence: with the multipart form it is a percentage (0-100), as on Roboflow's
    hosted API; with a base64 body a value up to 1 is a fraction and a larger one a percentage. Errors as for
    `/infer/instance_segmentation`."""
    settings = request.app.state.settings
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    options = bodies.hosted_options(request.query_params, settings, percent=multipart)
    # The key (query or header) and the model before the body: a wrong key reads none of it.
    principal = await _caller(request, request.query_params.get("api_key"))
    spec = await run_in_threadpool(_spec, session, principal.workspace_id, f"{project}/{version}")
    if multipart:
        data = await bodies.hosted_file(request, settings, visualize=options.visualize_predictions)
    else:
        raw = (await request.body()).decode("ascii", errors="replace").strip()
        if not raw:
            raise AppError("the request body must be the base64-encoded image, or a multipart 'file'",
                           status_code=400, source="body")  # fmt: skip
        data = await run_in_threadpool(
            bodies.roboflow_image, raw, settings, visualize=options.visualize_predictions
        )
    call = PredictCall(
        model=spec,
        options=_options(confidence=options.confidence, max_detections=options.max_detections,
                         mask_format=options.mask_format, prompts=None, iou_threshold=options.iou_threshold,
                         class_agnostic_nms=options.class_agnostic_nms),
        output="roboflow",
        visualize=options.visualize_predictions,
    )  # fmt: skip
    return (await request.app.state.inference.predict(call, data)).response()
