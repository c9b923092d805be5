"""The inference service's own routes, for the API in front of it: predict, load and evict, authenticated by
the internal token (never by an API key: the API has checked the caller and resolved the model), and a status
page for operators."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.core.errors import AppError, Unprocessable, problem_response, unexpected_response
from app.inference.calls import ModelSpec, decode_call
from app.inference.local import LocalInference
from app.inference.remote import INTERNAL_PREDICT, INTERNAL_TOKEN_HEADER

router = APIRouter(include_in_schema=False)


class NotInternal(AppError):
    status_code = 401


class NotPost(AppError):
    status_code = 405


def _check_token(headers: Headers, token: str) -> None:
    given = headers.get(INTERNAL_TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise NotInternal(
            f"this route is for the samtune API only: {INTERNAL_TOKEN_HEADER} is missing or wrong"
        )


def _inference(request: Request) -> LocalInference:
    _check_token(request.headers, request.app.state.settings.internal_token)
    inference: LocalInference = request.app.state.inference
    return inference


class InternalPredict:
    """`POST /internal/v1/predict`, the call every prediction the API forwards makes, as a plain ASGI app that
    the service runs ahead of FastAPI's middleware and router (InferenceApp): those fifteen layers cost 0.1 ms
    of CPU a call in process (bench/internal_hop.py), and 0.4 ms of a 14 ms prediction of the bundled model end
    to end (bench/RESULTS.md). Three of them still wrap it (metrics, security headers, the body limit); the
    token check and problem+json errors are done here."""

    def __init__(self, token: str, inference: LocalInference) -> None:
        self.token = token
        self.inference = inference

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response: Response
        try:
            if scope["method"] != "POST":
                raise NotPost(f"{INTERNAL_PREDICT} takes POST only")
            _check_token(request.headers, self.token)
            try:
                call, data = decode_call(await request.body())
            except ValidationError as exc:
                raise Unprocessable(
                    f"the internal predict call is not valid: {exc.error_count()} errors"
                ) from None
            response = (await self.inference.predict(call, data)).response()
        except AppError as exc:
            response = problem_response(exc, request)
            if isinstance(exc, NotPost):
                response.headers["Allow"] = "POST"
        except Exception as exc:  # noqa: BLE001 - answered as the 500 problem every other route answers
            response = unexpected_response(request, exc)
        await response(scope, receive, send)


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
