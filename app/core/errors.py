"""One error base class that carries its HTTP status, rendered as RFC 9457 problem+json.

Domain errors are declared beside the service that raises them and subclass `AppError`;
`install_error_handlers` renders every one of them, FastAPI's validation errors and Starlette's
HTTP errors in the same shape, so clients parse one format. Every answer's `type` is the URI of one kind of
error from `PROBLEM_TYPES` (docs/api.md, "Error types"), so a client branches on it instead of on `detail`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.security_headers import ALWAYS

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("samtune.errors")
# Identifiers, not pages this server serves: absolute (RFC 9457 advises against relative type URIs, which each
# client would resolve against a different host) and never renamed, since clients compare them as strings.
PROBLEM_BASE = "https://samtune.dev/problems/"


@dataclass(frozen=True)
class ProblemType:
    """One kind of error: its `type` URI is PROBLEM_BASE + `kind`. `status` is what it answers ("4xx" for the
    catch-all); `meaning` and `action` are its row in docs/api.md's table."""

    kind: str
    status: str
    meaning: str
    action: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.kind


PROBLEM_TYPES: dict[str, ProblemType] = {
    t.kind: t
    for t in (
        ProblemType("bad-request", "400", "The request is malformed: a body that cannot be parsed, an image that is "
                    "not base64, an image URL (never fetched).", "Fix the request as `detail` says."),
        ProblemType("unsafe-archive", "400", "The uploaded zip is not a zip, is damaged or holds an unsafe entry "
                    "(a path leaving the archive, a symbolic link, overlapping entries); `source` names the entry.",
                    "Rebuild the zip without that entry."),
        ProblemType("unauthorized", "401", "No API key, an unknown or revoked key, an expired session or event "
                    "token.", "Send a valid key (`Authorization: Bearer` or `?api_key=`), or sign in again."),
        ProblemType("forbidden", "403", "Authenticated, but not allowed: a cookie-authenticated change without "
                    "the session's `X-CSRF-Token`.", "API clients: send the key instead of a cookie."),
        ProblemType("not-found", "404", "No such object in your workspace (another workspace's objects are "
                    "not found either), or no such path.", "Check the id; list the collection to find it."),
        ProblemType("method-not-allowed", "405", "The path exists but not with this method.",
                    "Use a method the OpenAPI document lists for the path."),
        ProblemType("conflict", "409", "The object's state does not allow it now: a version not ready, a "
                    "finished job, a dataset or model still in use.", "Wait for the state `detail` names, or "
                    "remove what holds the object."),
        ProblemType("base-model-changed", "409", "A model's base is installed but its weights are not the ones the "
                    "model was fine-tuned from.", "Restore the base's original weights, or fine-tune again."),
        ProblemType("payload-too-large", "413", "The body is over the route's limit; `detail` names the setting.",
                    "Send less, or raise the setting `detail` names."),
        ProblemType("archive-too-large", "413", "The zip unpacks past a zip-bomb limit (bytes inflated, ratio, "
                    "entries); `source` names the entry.", "Split the dataset into several uploads, or raise the "
                    "`SAMTUNE_MAX_ZIP_*` setting `detail` names."),
        ProblemType("unsupported-media-type", "415", "The body's Content-Type is not one the route reads.",
                    "Send multipart/form-data or JSON as the route documents."),
        ProblemType("validation", "422", "The request is understood but its content is refused: a field breaks "
                    "its schema or a rule (`errors` lists schema errors; `source` names the field).",
                    "Change the field `detail` names."),
        ProblemType("invalid-upload", "422", "The zip is safe but its content is not a usable dataset: JSON that "
                    "is not COCO, annotations pointing at missing images or classes; `source` names the file.",
                    "Fix the file `source` names; nothing was stored."),
        ProblemType("invalid-image", "422", "The bytes are not a usable image: not JPEG, PNG or WebP, damaged, or "
                    "over the pixel limit.", "Send another image, or a smaller one."),
        ProblemType("webhook-refused", "422", "The webhook URL's host resolves to a loopback, private, link-local "
                    "or reserved address, or does not resolve.", "Use a public host, or ask the operator to "
                    "allow it (SAMTUNE_WEBHOOK_ALLOWED_HOSTS)."),
        ProblemType("rate-limited", "429", "Too many requests with this key on this kind of route.",
                    "Wait the seconds `Retry-After` gives, then retry."),
        ProblemType("client-error", "4xx", "Any other client error (a status not listed here).",
                    "Read `detail`."),
        ProblemType("internal-error", "500", "A bug: the error was logged on the server with its trace.",
                    "Retry later; report it with the time and `instance`."),
        ProblemType("service-unavailable", "503", "A service samtune needs is down or busy.",
                    "Retry later; a prediction changes nothing, so it is safe to retry."),
        ProblemType("inference-unavailable", "503", "No inference service answered in time, or one refused "
                    "the API's internal token; `detail` names each service tried.", "Retry; operators: check "
                    "SAMTUNE_INFERENCE_URLS and the services' logs."),
        ProblemType("model-unavailable", "503", "The model cannot be served here now: larger than the model "
                    "cache's budget, weights missing or not matching their sha256, a base not downloaded yet.",
                    "Operators: raise SAMTUNE_MODEL_CACHE_BYTES or restore the model's files."),
        ProblemType("base-model-unavailable", "503", "A model's base is not installed (a catalog model "
                    "missing, or its parent model deleted).", "Install the base `detail` names."),
        ProblemType("server-error", "5xx", "Any other server error (a status not listed here).",
                    "Retry later."),
    )
}  # fmt: skip

# The kind of an error whose class names none: one per status, else the catch-all of its class.
_KIND_OF_STATUS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
                   405: "method-not-allowed", 409: "conflict", 413: "payload-too-large",
                   415: "unsupported-media-type", 422: "validation", 429: "rate-limited", 500: "internal-error",
                   503: "service-unavailable"}  # fmt: skip


def problem_type(kind: str | None, status: int) -> str:
    """The `type` URI of an error of this kind (when given) or status."""
    if kind is None:
        kind = _KIND_OF_STATUS.get(status, "server-error" if status >= 500 else "client-error")
    return PROBLEM_TYPES[kind].uri


class Problem(BaseModel):
    """The body of every error answer (RFC 9457). Some errors add fields (`errors`, `classes_found`...)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="The kind of error, one URI per kind (docs/api.md, 'Error types'): branch on it, not on "
        "`detail`.",
        json_schema_extra={"enum": [t.uri for t in PROBLEM_TYPES.values()]},
    )
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
    (a file inside an uploaded zip, an annotation id, a field) when there is one. `kind` (a key of
    PROBLEM_TYPES) names its `type`; without one, the status does."""

    status_code: int = 400
    title: str | None = None
    kind: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        title: str | None = None,
        source: str | None = None,
        extra: dict[str, Any] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        if title is not None:
            self.title = title
        if kind is not None:
            self.kind = kind
        self.source = source
        self.extra = extra or {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": problem_type(self.kind, self.status_code),
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


def unexpected_response(request: Request, exc: Exception) -> JSONResponse:
    """The 500 problem for an error nothing handled, logged with its traceback; its text stays in the log."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    response = problem_response(
        AppError("an unexpected error occurred; it has been logged", status_code=500), request
    )
    # Starlette sends this answer from its outermost middleware, past SecurityHeaders: add them here.
    response.headers.update(dict(ALWAYS))
    return response


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
            AppError(
                detail, status_code=422, title="Invalid request", extra={"errors": safe}, kind="validation"
            ),
            request,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        response = problem_response(AppError(detail, status_code=exc.status_code), request)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
