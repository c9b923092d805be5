"""Every query the jobs package makes. Writes made on a worker's behalf are fenced by its lease token:
a stale attempt (its lease taken over by a newer one) changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core import lease
from app.core.db import utcnow
from app.core.pagination import PageParams, fetch_page
from app.datasets.tables import Dataset
from app.jobs.tables import JobEvent, Metric, TrainingJob
from app.models.tables import Model
from app.versions.tables import DatasetVersion

LOG = "log"


def lineage(start: Select[Any] | None = None) -> Select[Any]:
    """`start`'s columns, then a job, the version it trained on and that version's dataset, joined: the one
    spelling of the join behind every read of a job or a model (app/models/repository.py starts from
    `select(Model).join(Model.job)`). Rows without `start` are (job, version, dataset)."""
    stmt = select() if start is None else start
    return (
        stmt.add_columns(TrainingJob, DatasetVersion, Dataset)
        .join(TrainingJob.version)
        .join(DatasetVersion.dataset)
    )


def get(
    session: Session, workspace_id: uuid.UUID, job_id: uuid.UUID
) -> tuple[TrainingJob, DatasetVersion, Dataset] | None:
    stmt = lineage().where(TrainingJob.id == job_id, TrainingJob.workspace_id == workspace_id)
    row = session.execute(stmt).one_or_none()
    return (row[0], row[1], row[2]) if row else None


def page_jobs(
    session: Session,
    workspace_id: uuid.UUID,
    params: PageParams,
    *,
    status: str | None = None,
    dataset_id: uuid.UUID | None = None,
) -> tuple[list[tuple[TrainingJob, DatasetVersion, Dataset]], int]:
    """The workspace's jobs (only those with `status`, or of `dataset_id`, when given), newest first."""
    stmt = lineage().where(TrainingJob.workspace_id == workspace_id)
    if status is not None:
        stmt = stmt.where(TrainingJob.status == status)
    if dataset_id is not None:
        stmt = stmt.where(Dataset.id == dataset_id)
    stmt = stmt.order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc())
    return fetch_page(session, stmt, params, lambda r: (r[0], r[1], r[2]))


def queue_position(session: Session, job: TrainingJob) -> int | None:
    """1 + the queued jobs (of every workspace: they share the workers) created before this one."""
    if job.status != "queued":
        return None
    ahead = session.scalar(
        select(func.count())
        .select_from(TrainingJob)
        .where(TrainingJob.status == "queued", TrainingJob.created_at < job.created_at)
    )
    return (ahead or 0) + 1


def latest_metrics(session: Session, job_id: uuid.UUID) -> dict[str, float]:
    last = (
        select(Metric.name, func.max(Metric.step).label("step"))
        .where(Metric.job_id == job_id)
        .group_by(Metric.name)
        .subquery()
    )
    stmt = (
        select(Metric.name, Metric.value)
        .join(last, (Metric.name == last.c.name) & (Metric.step == last.c.step))
        .where(Metric.job_id == job_id)
    )
    return {name: value for name, value in session.execute(stmt)}


def metrics(session: Session, job_id: uuid.UUID, names: Sequence[str] | None = None) -> list[Metric]:
    stmt = select(Metric).where(Metric.job_id == job_id).order_by(Metric.step, Metric.name)
    if names:
        stmt = stmt.where(Metric.name.in_(names))
    return list(session.scalars(stmt))


def events(session: Session, job_id: uuid.UUID) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind != LOG).order_by(JobEvent.id)
    return list(session.scalars(stmt))


def logs(session: Session, job_id: uuid.UUID, *, after: int = 0, limit: int = 1000) -> list[JobEvent]:
    stmt = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.kind == LOG, JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def model_for(session: Session, job_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(select(Model.id).where(Model.job_id == job_id))


def model_row(session: Session, job_id: uuid.UUID) -> Model | None:
    return session.scalars(select(Model).where(Model.job_id == job_id)).first()


def add_event(
    session: Session, job_id: uuid.UUID, kind: str, message: str, data: dict[str, Any] | None = None,
    attempt: int = 0,
) -> JobEvent:  # fmt: skip
    event = JobEvent(job_id=job_id, kind=kind, message=message, data=data or {}, attempt=attempt)
    session.add(event)
    session.flush()
    return event


# --- the lease (app/core/lease.py: one protocol for jobs, builds and batch predictions) ------------

LEASED = lease.Leased(
    TrainingJob, waiting="queued", running="running", attempt=TrainingJob.attempt,
    sent=TrainingJob.enqueued_at,
)  # fmt: skip


def claim(session: Session, job_id: uuid.UUID, token: str, now: datetime, duration: timedelta) -> bool:
    """Take the job for one attempt (see lease.claim); a job whose cancel was asked for is never taken."""
    return lease.claim(
        session, LEASED, job_id, token, now, duration,
        where=(TrainingJob.cancel_requested.is_(False),),
        values={"started_at": func.coalesce(TrainingJob.started_at, now)},
    )  # fmt: skip


def renew(
    session: Session, job_id: uuid.UUID, token: str, now: datetime, duration: timedelta,
    progress: dict[str, Any] | None = None,
) -> tuple[bool, bool] | None:  # fmt: skip
    """Extend our lease (and record the display progress). None when the lease is no longer ours; else the
    (stop_requested, cancel_requested) flags the loop must act on."""
    values = {"progress": progress} if progress is not None else None
    if not lease.renew(session, LEASED, job_id, token, now, duration, values):
        return None
    flags = session.execute(
        select(TrainingJob.stop_requested, TrainingJob.cancel_requested).where(TrainingJob.id == job_id)
    ).one()
    return bool(flags[0]), bool(flags[1])


def fenced(session: Session, job_id: uuid.UUID, token: str) -> TrainingJob | None:
    """The job, row-locked (PostgreSQL), if `token` still holds its lease; None for a stale attempt."""
    return lease.fenced(session, LEASED, job_id, token)


def move_checkpoint(
    session: Session, job_id: uuid.UUID, token: str, prefix: str, step: int, best_prefix: str | None
) -> bool:
    """Point the job's resume at a fully uploaded checkpoint: one UPDATE fenced by the lease token (a stale
    attempt moves nothing). `best_prefix` None keeps the pointer to the best checkpoint as it is."""
    values: dict[str, Any] = {"checkpoint_prefix": prefix, "checkpoint_step": step}
    if best_prefix is not None:
        values["best_checkpoint_prefix"] = best_prefix
    done = session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.lease_token == token, TrainingJob.status == "running")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1  # type: ignore[attr-defined]


def upsert_metrics(
    session: Session, job_id: uuid.UUID, points: Iterable[tuple[int, float, str, float]]
) -> None:
    """(step, epoch, name, value) rows; a redone step (after a resume) overwrites its own point."""
    now = utcnow()
    rows = [
        {"job_id": job_id, "step": s, "epoch": e, "name": n, "value": v, "recorded_at": now}
        for s, e, n, v in points
    ]
    if not rows:
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(Metric).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "name", "step"],
        set_={"value": stmt.excluded.value, "epoch": stmt.excluded.epoch},
    )
    session.execute(stmt)


def expired_leases(session: Session, now: datetime) -> list[lease.Expired[TrainingJob]]:
    """Running jobs whose worker went silent, fenced out; `retry` False once max_restarts are spent."""
    return lease.reap(session, LEASED, now, max_attempts=lambda job: job.max_restarts + 1)


def forgotten_queued(session: Session, older_than: datetime) -> list[TrainingJob]:
    """Queued jobs last sent before `older_than`: their message must be lost (see lease.forgotten)."""
    return lease.forgotten(session, LEASED, older_than)
