"""One error base class that carries its HTTP status, rendered as RFC 9457 problem+json.

Domain errors are declared beside the service that raises them and subclass `AppError`;
`install_error_handlers` renders every one of them, FastAPI's validation errors and Starlette's
HTTP errors in the same shape, so clients parse one format.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.security_headers import ALWAYS

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("samtune.errors")


class Problem(BaseModel):
    """The body of every error answer (RFC 9457). Some errors add fields (`errors`, `classes_found`...)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    source: str | None = None


# Every operation may answer a client error, always in this shape: the OpenAPI document says so (pass to
# `FastAPI(responses=...)`), in place of FastAPI's default 422 body, which this API never sends.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "A problem the client can act on (RFC 9457); `detail` says what to change.",
        "content": {PROBLEM_JSON: {"schema": Problem.model_json_schema()}},
    }
}


class AppError(Exception):
    """An error a client can act on. `detail` is written for a person; `source` names the culprit
    (a file inside an uploaded zip, an annotation id, a field) when there is one."""

    status_code: int = 400
    title: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        title: str | None = None,
        source: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        if title is not None:
            self.title = title
        self.source = source
        self.extra = extra or {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title or HTTPStatus(self.status_code).phrase,
            "status": self.status_code,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.source:
            body["source"] = self.source
        body.update(self.extra)
        return body


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class Unauthorized(AppError):
    status_code = 401


class Unprocessable(AppError):
    status_code = 422


class PayloadTooLarge(AppError):
    status_code = 413


def problem_response(error: AppError, request: Request | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
    return JSONResponse(
        error.to_problem(request.url.path if request else None),
        status_code=error.status_code,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _describe_validation_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in err.get("loc", ()) if part not in ("body",))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        detail = "; ".join(_describe_validation_error(e) for e in errors[:10]) or "invalid request"
        # pydantic's error dicts can hold the raw input (bytes, exceptions): keep only what is JSON-safe.
        safe = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in errors
        ]
        return problem_response(
            AppError(detail, status_code=422, title="Invalid request", extra={"errors": safe}), request
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        response = problem_response(
            AppError("an unexpected error occurred; it has been logged", status_code=500), request
        )
        # Starlette sends this answer from its outermost middleware, past SecurityHeaders: add them here.
        response.headers.update(dict(ALWAYS))
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        response = problem_response(AppError(detail, status_code=exc.status_code), request)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
