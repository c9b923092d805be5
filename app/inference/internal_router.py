"""The inference service's own routes, for the API in front of it: predict and load, authenticated by the
internal token (never by an API key: the API has checked the caller and resolved the model), and a status
page for operators."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from app.core.errors import AppError
from app.inference.calls import ModelSpec, decode_call
from app.inference.local import LocalInference
from app.inference.remote import INTERNAL_TOKEN_HEADER

router = APIRouter(include_in_schema=False)


class NotInternal(AppError):
    status_code = 401


def _inference(request: Request) -> LocalInference:
    given = request.headers.get(INTERNAL_TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), request.app.state.settings.internal_token.encode()):
        raise NotInternal(
            f"this route is for the samtune API only: {INTERNAL_TOKEN_HEADER} is missing or wrong"
        )
    inference: LocalInference = request.app.state.inference
    return inference


@router.post("/internal/v1/predict")
async def internal_predict(request: Request) -> Response:
    inference = _inference(request)
    call, data = decode_call(await request.body())
    return (await inference.predict(call, data)).response()


@router.post("/internal/v1/load")
async def internal_load(request: Request) -> dict[str, str]:
    inference = _inference(request)
    model = ModelSpec.model_validate_json(await request.body())
    await inference.load(model)
    return {"loaded": model.key}


class EvictRequest(BaseModel):
    key: str


@router.post("/internal/v1/evict")
async def internal_evict(request: Request) -> dict[str, str]:
    """The API deleted this model: free its memory now."""
    inference = _inference(request)
    key = EvictRequest.model_validate_json(await request.body()).key
    inference.evict(key)
    request.app.state.model_specs.forget(key)
    return {"evicted": key}


@router.get("/internal/v1/status")
def internal_status(request: Request) -> dict[str, Any]:
    """What this service holds: its device, its models (most recently used last) and their bytes, the sizes of
    its recent batches."""
    inference = _inference(request)
    cache = inference.cache
    return {
        "device": str(cache.device),
        "models": cache.keys(),
        "used_bytes": cache.used_bytes,
        "budget_bytes": cache.budget,
        "recent_batch_sizes": list(inference.batcher.batch_sizes)[-100:],
    }
