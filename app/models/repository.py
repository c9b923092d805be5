"""Every query the models package makes (batch predictions' lease is app/core/lease.py's, in batches.py).
A model is always read with its lineage: the job that trained it, that job's data version and its dataset."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from app.core.pagination import PageParams, fetch_page
from app.datasets.tables import Dataset
from app.jobs import repository as jobs
from app.jobs.tables import TrainingJob
from app.models.tables import BatchPrediction, Model
from app.versions.tables import DatasetVersion

Row = tuple[Model, TrainingJob, DatasetVersion, Dataset]


def _lineage(workspace_id: uuid.UUID) -> Select[Any]:
    return jobs.lineage(select(Model).join(Model.job)).where(Model.workspace_id == workspace_id)


def _row(found: Any) -> Row:
    return found[0], found[1], found[2], found[3]


def get(session: Session, workspace_id: uuid.UUID, model_id: uuid.UUID) -> Row | None:
    found = session.execute(_lineage(workspace_id).where(Model.id == model_id)).one_or_none()
    return _row(found) if found else None


def page_newest_first(session: Session, workspace_id: uuid.UUID, params: PageParams) -> tuple[list[Row], int]:
    stmt = _lineage(workspace_id).order_by(Model.created_at.desc(), Model.id.desc())
    return fetch_page(session, stmt, params, _row)


# What a version's `slug/number` name may name: a model that did not score below its base, or was promoted.
_SERVED_BY_NAME = or_(Model.regression.is_(False), Model.promoted_at.is_not(None))


def newest_for_version(session: Session, workspace_id: uuid.UUID, slug: str, number: int) -> Row | None:
    """The model Roboflow's `slug/number` id names: of the models trained on version `number` of the dataset
    `slug`, those that did not score below their base (or were promoted anyway), the one made current last
    (created, or promoted, most recently)."""
    stmt = (
        _lineage(workspace_id)
        .where(Dataset.slug == slug, DatasetVersion.number == number)
        .where(_SERVED_BY_NAME)
        .order_by(func.coalesce(Model.promoted_at, Model.created_at).desc(), Model.created_at.desc())
        .limit(1)
    )
    found = session.execute(stmt).first()
    return _row(found) if found else None


def regressions_for_version(session: Session, workspace_id: uuid.UUID, slug: str, number: int) -> list[Model]:
    """That version's models that scored below their base and were never promoted, newest first (why its
    `slug/number` id names no model, when `newest_for_version` finds none)."""
    stmt = (
        _lineage(workspace_id)
        .where(Dataset.slug == slug, DatasetVersion.number == number)
        .where(Model.regression.is_(True), Model.promoted_at.is_(None))
        .order_by(Model.created_at.desc())
    )
    return [found[0] for found in session.execute(stmt)]


def version_names_oldest_first(session: Session, workspace_id: uuid.UUID) -> list[str]:
    """Each version name that names a model (one that did not regress, or was promoted) once, at the place of its
    first such model. No join: every model has a job, a version and a dataset (non-null foreign keys, deletes
    restricted), so the lineage would filter nothing out."""
    stmt = (
        select(Model.version_name)
        .where(Model.workspace_id == workspace_id, _SERVED_BY_NAME)
        .order_by(Model.created_at)
    )
    return list(dict.fromkeys(session.scalars(stmt)))


def active_batch(session: Session, model_id: uuid.UUID) -> uuid.UUID | None:
    """A batch prediction of the model that is queued or running, if any."""
    return session.scalar(
        select(BatchPrediction.id).where(
            BatchPrediction.model_id == model_id, BatchPrediction.status.in_(("queued", "running"))
        )
    )


def page_batches(
    session: Session, workspace_id: uuid.UUID, params: PageParams, *, model_id: uuid.UUID | None = None
) -> tuple[list[BatchPrediction], int]:
    """The workspace's batch predictions (of `model_id` only, when given), newest first."""
    stmt = select(BatchPrediction).where(BatchPrediction.workspace_id == workspace_id)
    if model_id is not None:
        stmt = stmt.where(BatchPrediction.model_id == model_id)
    stmt = stmt.order_by(BatchPrediction.created_at.desc(), BatchPrediction.id.desc())
    return fetch_page(session, stmt, params, lambda r: r[0])


def get_batch(session: Session, workspace_id: uuid.UUID, batch_id: uuid.UUID) -> BatchPrediction | None:
    return session.scalars(
        select(BatchPrediction).where(
            BatchPrediction.id == batch_id, BatchPrediction.workspace_id == workspace_id
        )
    ).first()
