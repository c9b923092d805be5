from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.core.deps import SessionDep
from app.health.readiness import Readiness, readiness

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


@router.get("/healthz", summary="Liveness check", response_model=Health)
def healthz(session: SessionDep) -> Health:
    """Liveness: this process answers and reaches its database. Needs no key. 200 `{status, database}`; a
    process whose database is gone answers 500, so an orchestrator restarts it. For whether the whole service
    can work, ask `/readyz`."""
    session.execute(text("SELECT 1"))
    return Health(status="ok", database="ok")


@router.get(
    "/readyz",
    summary="Readiness check",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down; `checks` says which."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database, the broker, object storage, the live-feed Redis and the inference services
    (the last two when configured) are each checked at once, within 3 s each. Needs no key. 200 when all
    answer; 503 when any does not, with `checks` naming each dependency's status, seconds and, for a failure,
    its kind only (no hosts or credentials)."""
    state = request.app.state
    answer = await readiness(state.settings, state.engine, state.storage)
    return JSONResponse(answer.model_dump(), status_code=200 if answer.status == "ready" else 503)
