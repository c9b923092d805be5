"""Every query the versions package makes."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core import lease
from app.core.pagination import PageParams, fetch_page
from app.datasets.tables import Annotation, Category, Dataset, Image
from app.jobs.tables import TrainingJob
from app.versions.plan import SourceImage
from app.versions.tables import DatasetVersion
from app.versions.transforms import Instance


def get(
    session: Session, workspace_id: uuid.UUID, version_id: uuid.UUID
) -> tuple[DatasetVersion, Dataset] | None:
    stmt = (
        select(DatasetVersion, Dataset)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(DatasetVersion.id == version_id, Dataset.workspace_id == workspace_id)
    )
    row = session.execute(stmt).one_or_none()
    return (row[0], row[1]) if row else None


def get_any(session: Session, version_id: uuid.UUID) -> tuple[DatasetVersion, Dataset] | None:
    stmt = (
        select(DatasetVersion, Dataset)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(DatasetVersion.id == version_id)
    )
    row = session.execute(stmt).one_or_none()
    return (row[0], row[1]) if row else None


def list_for_dataset(session: Session, dataset_id: uuid.UUID) -> list[DatasetVersion]:
    stmt = (
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id).order_by(DatasetVersion.number)
    )
    return list(session.scalars(stmt))


def page_for_dataset(
    session: Session, dataset_id: uuid.UUID, params: PageParams
) -> tuple[list[DatasetVersion], int]:
    """The dataset's versions, newest (highest number) first."""
    stmt = (
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.number.desc(), DatasetVersion.id.desc())
    )
    return fetch_page(session, stmt, params, lambda r: r[0])


def next_number(session: Session, dataset_id: uuid.UUID) -> int:
    current = session.scalar(
        select(func.max(DatasetVersion.number)).where(DatasetVersion.dataset_id == dataset_id)
    )
    return (current or 0) + 1


def class_names(session: Session, dataset_id: uuid.UUID) -> list[str]:
    stmt = select(Category.name).where(Category.dataset_id == dataset_id).order_by(Category.position)
    return list(session.scalars(stmt))


def source_images(session: Session, dataset_id: uuid.UUID) -> list[SourceImage]:
    """Every image of the dataset with its instances, class_id = the class's position."""
    by_image: defaultdict[uuid.UUID, list[Instance]] = defaultdict(list)
    anns = (
        select(Annotation, Category.position)
        .join(Category, Category.id == Annotation.category_id)
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.dataset_id == dataset_id)
    )
    for ann, position in session.execute(anns):
        by_image[ann.image_id].append(
            Instance(position, tuple(ann.bbox), ann.segmentation, bool(ann.iscrowd), float(ann.area))  # type: ignore[arg-type]
        )
    images = session.scalars(select(Image).where(Image.dataset_id == dataset_id))
    return [
        SourceImage(
            id=im.id,
            object_key=im.object_key,
            sha256=im.sha256,
            width=im.width,
            height=im.height,
            split=im.split,
            # Row ids are random; order instances by content so equal data gives equal snapshots.
            instances=tuple(
                sorted(by_image[im.id], key=lambda i: (i.class_id, i.bbox, repr(i.segmentation)))
            ),
        )
        for im in images
    ]


def ready_with_hash(session: Session, dataset_id: uuid.UUID, content_hash: str) -> DatasetVersion | None:
    stmt = select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset_id,
        DatasetVersion.content_hash == content_hash,
        DatasetVersion.status == "ready",
    )
    return session.scalars(stmt.limit(1)).first()


def prefix_users(session: Session, prefix: str, *, excluding: uuid.UUID | None = None) -> int:
    stmt = select(func.count()).select_from(DatasetVersion).where(DatasetVersion.snapshot_prefix == prefix)
    if excluding is not None:
        stmt = stmt.where(DatasetVersion.id != excluding)
    return session.scalar(stmt) or 0


def job_using(session: Session, version_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(select(TrainingJob.id).where(TrainingJob.version_id == version_id).limit(1))


# --- the lease (app/core/lease.py: one protocol for jobs, builds and batch predictions) ------------

# A build is `building` from the request until it ends, whether a worker holds it or not; the claim counts its
# attempts (`attempts`). Its message was last sent when it was last claimed, renewed or re-sent (`heartbeat_at`).
LEASED = lease.Leased(
    DatasetVersion, waiting="building", running="building", attempt=DatasetVersion.attempts,
    sent=DatasetVersion.heartbeat_at,
)  # fmt: skip
# A build beats about once a second while it works; two minutes of silence mean its worker is gone.
BUILD_LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 3


def gave_up(lost: int) -> str:
    """The error of a build given up on once `lost` workers were lost on it."""
    return f"the build stopped responding {lost} times (worker killed or out of memory)"


def claim(session: Session, version_id: uuid.UUID, token: str, now: datetime) -> bool:
    """Take the build for one attempt (see lease.claim), counting it."""
    return lease.claim(session, LEASED, version_id, token, now, BUILD_LEASE)


def renew(session: Session, version_id: uuid.UUID, token: str, progress: float, now: datetime) -> bool:
    """Record progress and renew the build's lease; False when the lease is no longer ours."""
    return lease.renew(session, LEASED, version_id, token, now, BUILD_LEASE, {"progress": progress})


def fenced(session: Session, version_id: uuid.UUID, token: str) -> DatasetVersion | None:
    """The version, row-locked (PostgreSQL), if `token` still holds its build's lease; None for a stale one."""
    return lease.fenced(session, LEASED, version_id, token)


def expired_builds(session: Session, now: datetime) -> list[lease.Expired[DatasetVersion]]:
    """Builds whose worker went silent, fenced out; `retry` False once MAX_ATTEMPTS are spent."""
    return lease.reap(session, LEASED, now, max_attempts=lambda _: MAX_ATTEMPTS)


def unclaimed_builds(session: Session, older_than: datetime) -> list[DatasetVersion]:
    """Builds no worker holds that were last sent (or created) before `older_than`: their message was lost,
    or a reaper fenced their worker out and the message it sent went missing too (see lease.forgotten)."""
    return lease.forgotten(session, LEASED, older_than)
