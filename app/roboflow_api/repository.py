"""Every query the Roboflow-compatible routes make beyond what the datasets, versions, jobs and models packages
already offer."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.datasets.tables import Annotation, Category, Dataset, Image
from app.jobs.tables import TrainingJob
from app.versions.tables import DatasetVersion
from app.workspaces.tables import Workspace


def workspace(session: Session, workspace_id: uuid.UUID) -> Workspace:
    return session.get_one(Workspace, workspace_id)


def dataset_by_slug(session: Session, workspace_id: uuid.UUID, slug: str) -> Dataset | None:
    stmt = select(Dataset).where(Dataset.workspace_id == workspace_id, Dataset.slug == slug)
    return session.scalars(stmt).one_or_none()


def version_by_number(session: Session, dataset_id: uuid.UUID, number: int) -> DatasetVersion | None:
    stmt = select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset_id, DatasetVersion.number == number
    )
    return session.scalars(stmt).one_or_none()


def image_by_sha(session: Session, dataset_id: uuid.UUID, sha256: str) -> Image | None:
    stmt = select(Image).where(Image.dataset_id == dataset_id, Image.sha256 == sha256)
    return session.scalars(stmt).one_or_none()


def class_counts(session: Session, dataset_id: uuid.UUID) -> dict[str, int]:
    """Every class of the dataset with its number of annotations (0 for a class no annotation uses)."""
    stmt = (
        select(Category.name, func.count(Annotation.id))
        .outerjoin(Annotation, Annotation.category_id == Category.id)
        .where(Category.dataset_id == dataset_id)
        .group_by(Category.name, Category.position)
        .order_by(Category.position)
    )
    return {name: n for name, n in session.execute(stmt)}


def unannotated_count(session: Session, dataset_id: uuid.UUID) -> int:
    annotated = select(Annotation.image_id).where(Annotation.image_id == Image.id).exists()
    stmt = select(func.count()).select_from(Image).where(Image.dataset_id == dataset_id, ~annotated)
    return session.scalar(stmt) or 0


def last_image_at(session: Session, dataset_id: uuid.UUID) -> datetime | None:
    return session.scalar(select(func.max(Image.created_at)).where(Image.dataset_id == dataset_id))


def newest_job(session: Session, workspace_id: uuid.UUID, version_id: uuid.UUID) -> TrainingJob | None:
    """The version's training as Roboflow shows one: the newest job on it."""
    stmt = (
        select(TrainingJob)
        .where(TrainingJob.workspace_id == workspace_id, TrainingJob.version_id == version_id)
        .order_by(TrainingJob.created_at.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def delete_annotations(session: Session, image_id: uuid.UUID) -> int:
    rows = session.scalars(select(Annotation).where(Annotation.image_id == image_id)).all()
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)


def has_annotations(session: Session, image_id: uuid.UUID) -> bool:
    return session.scalar(select(Annotation.id).where(Annotation.image_id == image_id).limit(1)) is not None
