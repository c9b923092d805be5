from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.core.db import transaction
from app.core.deps import AUTH_SCHEMES, CurrentPrincipal, SessionDep, SettingsDep, TasksDep, resolve_principal
from app.core.errors import Unauthorized
from app.core.pagination import Page, PageDep
from app.jobs import base_models, repository, service, stream, tokens
from app.jobs.schemas import (
    EventsToken,
    JobCreate,
    JobCreated,
    JobOut,
    JobPreview,
    JobRequest,
    JobStatus,
    LogLine,
    MetricPoint,
)
from app.keys.tables import ApiKey

router = APIRouter(tags=["jobs"])


class BaseModelOut(BaseModel):
    name: str
    description: str
    available: bool
    default: bool
    unavailable_reason: str | None
    download: bool = Field(
        default=False,
        description="Not on this installation yet: the first job that names it downloads it from the Hugging Face "
        "Hub (its progress is the job's 'downloading' phase). Predictions with it answer 503 until then.",
    )


@router.get("/api/v1/base-models", summary="List base models", response_model=list[BaseModelOut])
def list_base_models(settings: SettingsDep, principal: CurrentPrincipal) -> list[BaseModelOut]:
    """The base models this installation can fine-tune from (and serve), the default first; each says whether
    it is available and, if not, why."""
    # Where the weights live is the server's business: not shown.
    return [
        BaseModelOut(**m.model_dump(exclude={"location", "recommended"}))
        for m in base_models.catalog(settings)
    ]


@router.post("/api/v1/jobs/preview", summary="Preview a training job", response_model=JobPreview)
def preview_job(
    req: JobRequest, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> JobPreview:
    """What a job with this request would do, creating nothing: every hyperparameter with its value and the
    reason for it, the base model, the requested and resolved mode and a rough duration. 422 (naming the
    field) for a version that is not ready, an unknown base model or hyperparameter, or a configuration that
    does not fit the worker's memory (the estimate, the budget and what to change)."""
    return service.preview(session, settings, principal.workspace_id, req)


@router.post(
    "/api/v1/jobs",
    summary="Create a training job",
    response_model=JobCreated,
    status_code=status.HTTP_201_CREATED,
    responses={
        422: {
            "description": "Version not ready, unknown base model, an invalid override, or a configuration "
            "that does not fit the worker's memory"
        }
    },
)
def create_job(
    req: JobCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    tasks: TasksDep,
    principal: CurrentPrincipal,
) -> JobCreated:
    """Fine-tune a base model (or a model of your workspace) on a ready version. 201 with the job, queued;
    `webhook_secret` is shown this once when a `webhook_url` was given. 404 for a model base not in your
    workspace; 422 (naming the field) for a version that is not ready, an unknown or unavailable base model,
    an invalid hyperparameter, a refused webhook URL, more GPUs than the largest live worker has, or a
    configuration that does not fit the worker's memory."""
    job, secret = service.create(
        session, settings, tasks, request.app.state.publisher, principal.workspace_id, req
    )
    _, version, dataset = service.get(session, principal.workspace_id, job.id)
    out = service.describe(session, job, version, dataset)
    return JobCreated(**out.model_dump(), webhook_secret=secret)


@router.get(
    "/api/v1/jobs",
    summary="List training jobs",
    description="Your workspace's training jobs, newest first, optionally only those of one `status` or one `dataset_id`.",
    response_model=Page[JobOut],
)
def list_jobs(
    session: SessionDep,
    principal: CurrentPrincipal,
    params: PageDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    dataset_id: uuid.UUID | None = None,
) -> Page[JobOut]:
    rows, total = repository.page_jobs(
        session, principal.workspace_id, params, status=status_, dataset_id=dataset_id
    )
    return params.page([service.describe(session, *row) for row in rows], total)


@router.get("/api/v1/jobs/{job_id}", summary="Get a training job", response_model=JobOut)
def get_job(job_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> JobOut:
    """A job's status, attempt, queue position, progress (step, epoch, steps/s, ETA, the phase before
    training), latest metrics, best validation summary, events and error; after success its `model_id` and
    `test` (the base and the fine-tuned model on the test split). 404 when it is not in your workspace."""
    return service.describe(session, *service.get(session, principal.workspace_id, job_id))


# The names the trainer writes (loss, lr, valid_segm_AP50, ...).
METRIC_NAME = r"^[A-Za-z0-9_./-]+$"


@router.get(
    "/api/v1/jobs/{job_id}/metrics",
    summary="Get a job's metric series",
    operation_id="get_job_metrics",
    description="Every recorded metric point `{step, epoch, name, value}`, ordered by step, for charts; `name` (repeatable) keeps only those metrics. 404 when the job is not in your workspace; 422 for a name outside the metric names' alphabet.",
    response_model=list[MetricPoint],
)
def job_metrics(
    job_id: uuid.UUID,
    session: SessionDep,
    principal: CurrentPrincipal,
    name: Annotated[
        list[Annotated[str, StringConstraints(pattern=METRIC_NAME, max_length=100)]] | None,
        Query(description="Only these metrics (repeatable), e.g. loss, valid_segm_AP."),
    ] = None,
) -> list[MetricPoint]:
    """Every recorded point, ordered by step, for charts. A name outside the metric names' alphabet is 422:
    PostgreSQL refuses a NUL byte in text, which the fuzz test once sent (a 500)."""
    job, _, _ = service.get(session, principal.workspace_id, job_id)
    return [
        MetricPoint(step=m.step, epoch=m.epoch, name=m.name, value=m.value)
        for m in repository.metrics(session, job.id, name)
    ]


@router.get(
    "/api/v1/jobs/{job_id}/logs",
    summary="Get a job's log lines",
    operation_id="get_job_logs",
    response_model=list[LogLine],
)
def job_logs(
    job_id: uuid.UUID,
    session: SessionDep,
    principal: CurrentPrincipal,
    # le: ids are 64-bit; a larger number reached PostgreSQL and failed there (500).
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Only lines after this id (poll with the last one).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[LogLine]:
    """The trainer's log lines after the id `after` (poll with the last id you got), at most `limit`. 404 when
    the job is not in your workspace."""
    job, _, _ = service.get(session, principal.workspace_id, job_id)
    return [
        LogLine(id=e.id, time=e.created_at, attempt=e.attempt, message=e.message)
        for e in repository.logs(session, job.id, after=after, limit=limit)
    ]


@router.post(
    "/api/v1/jobs/{job_id}/stop",
    summary="Stop a training job",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def stop_job(job_id: uuid.UUID, request: Request, session: SessionDep, principal: CurrentPrincipal) -> JobOut:
    """Finish now: keep the best checkpoint, evaluate it and register the model (a queued job just ends,
    `cancelled`). 202 with the job. 404 when it is not in your workspace; 409 when it has already finished."""
    service.request_stop(session, request.app.state.publisher, principal.workspace_id, job_id, cancel=False)
    return service.describe(session, *service.get(session, principal.workspace_id, job_id))


@router.post(
    "/api/v1/jobs/{job_id}/cancel",
    summary="Cancel a training job",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def cancel_job(
    job_id: uuid.UUID, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> JobOut:
    """Abandon the job and discard what it trained. 202 with the job. 404 when it is not in your workspace;
    409 when it has already finished."""
    service.request_stop(session, request.app.state.publisher, principal.workspace_id, job_id, cancel=True)
    return service.describe(session, *service.get(session, principal.workspace_id, job_id))


@router.post(
    "/api/v1/jobs/{job_id}/events-token",
    summary="Get an event-stream token",
    operation_id="create_events_token",
    response_model=EventsToken,
)
def events_token(
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> EventsToken:
    """A token for the job's event stream that a browser's EventSource can put in its URL, which cannot send
    headers: `{token, expires_at, url}`, valid 15 minutes for this job only, and only while the key that asked
    for it is not revoked. 404 when the job is not in your workspace."""
    job, _, _ = service.get(session, principal.workspace_id, job_id)
    token, expires = tokens.issue(settings.signing_key, job.id, principal.workspace_id, principal.key_id)
    return EventsToken(
        token=token,
        expires_at=datetime.fromtimestamp(expires, UTC),
        url=str(request.url_for("job_events", job_id=job.id).include_query_params(token=token)),
    )


KEY_RECHECK_SECONDS = 2.0


def _key_revoked(session: Session, key_id: uuid.UUID) -> bool:
    key = session.get(ApiKey, key_id)
    return key is None or key.revoked_at is not None


def _stop_when(
    request: Request, factory: sessionmaker[Session], key_id: uuid.UUID
) -> Callable[[], Awaitable[bool]]:
    """The stream's stop check: the client left, or the key it was opened with (or whose token it presented) has
    been revoked since. A stream lasts as long as the job; revoking a key must not leave it open for hours."""
    checked = time.monotonic()

    def revoked() -> bool:
        with transaction(factory) as session:
            return _key_revoked(session, key_id)

    async def stop() -> bool:
        nonlocal checked
        if await request.is_disconnected():
            return True
        if time.monotonic() - checked < KEY_RECHECK_SECONDS:
            return False
        checked = time.monotonic()
        return await run_in_threadpool(revoked)

    return stop


@router.get(
    "/api/v1/jobs/{job_id}/events",
    summary="Stream a job's events",
    operation_id="stream_job_events",
    name="job_events",
    # The key or a token, checked in the handler: the schemes are listed for the OpenAPI document.
    dependencies=AUTH_SCHEMES,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    token: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Server-Sent Events: `metrics`, `progress`, `status` and `event`, each with an id; reconnect with
    Last-Event-ID to get what was missed, nothing twice. Ends with the final `status`. Authenticate with the
    API key, or with `?token=` from `POST .../events-token`. A reconnect after the final event answers 204
    (EventSource then stops reconnecting). 401 for a missing, expired or revoked key or token; 404 when the
    job is not in your workspace."""
    factory = request.app.state.sessionmaker

    def authorise() -> tuple[uuid.UUID, uuid.UUID]:
        with transaction(factory) as session:
            if token:
                grant = tokens.verify(settings.signing_key, token, job_id)
                if _key_revoked(session, grant.api_key_id):
                    raise Unauthorized("the API key this event token was issued to has been revoked")
                workspace, key_id = grant.workspace_id, grant.api_key_id
            else:
                principal = resolve_principal(request, session)
                workspace, key_id = principal.workspace_id, principal.key_id
            job, _, _ = service.get(session, workspace, job_id)
            return job.id, key_id

    found, key_id = await run_in_threadpool(authorise)
    if await stream.finished_for(factory, found, last_event_id, settings.redis_url):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    body = stream.events(
        factory, found, last_event_id, settings.redis_url, _stop_when(request, factory, key_id)
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
