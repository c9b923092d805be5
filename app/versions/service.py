"""Versions: ask for one (built by a worker), read, export, delete."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from zipstream import ZIP_STORED, ZipStream

from app.core.db import after_commit
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.queue import TaskQueue, enqueue_after_commit
from app.core.storage import ObjectStorage, iter_object
from app.core.tasks import BUILD_VERSION
from app.datasets import service as datasets
from app.datasets.schemas import SplitCounts
from app.datasets.tables import Dataset, Image
from app.jobs.tables import TrainingJob
from app.models.tables import Model
from app.versions import repository
from app.versions.plan import PlanError, map_classes
from app.versions.schemas import VersionOut, VersionSpec
from app.versions.tables import DatasetVersion


class VersionNotFound(NotFound):
    def __init__(self, version_id: uuid.UUID) -> None:
        super().__init__(f"version {version_id} not found in this workspace")


def get_version(
    session: Session, workspace_id: uuid.UUID, version_id: uuid.UUID
) -> tuple[DatasetVersion, Dataset]:
    found = repository.get(session, workspace_id, version_id)
    if found is None:
        raise VersionNotFound(version_id)
    return found


def ready_version(
    session: Session, workspace_id: uuid.UUID, version_id: uuid.UUID
) -> tuple[DatasetVersion, Dataset]:
    """A version that something (a job, a batch prediction) is about to read; 422 naming `version_id` if it
    is not this workspace's or not ready."""
    try:
        version, dataset = get_version(session, workspace_id, version_id)
    except NotFound:
        raise Unprocessable(
            f"version {version_id} not found in this workspace", source="version_id"
        ) from None
    if version.status != "ready":
        raise Unprocessable(
            f"version {version_name(dataset, version)} is {version.status}, not ready: wait for its build"
            + (f" (it failed: {version.error})" if version.status == "failed" else ""),
            source="version_id",
        )
    return version, dataset


def create_version(
    session: Session, tasks: TaskQueue, workspace_id: uuid.UUID, dataset_id: uuid.UUID, spec: VersionSpec
) -> tuple[DatasetVersion, Dataset]:
    dataset = datasets.get_dataset(session, workspace_id, dataset_id)
    # Refuse now what the build would refuse later, so the user sees the problem in the 4xx, not a failed version.
    try:
        map_classes(repository.class_names(session, dataset.id), spec.preprocessing.classes)
    except PlanError as exc:
        raise Unprocessable(str(exc), source="preprocessing.classes") from None
    if not session.scalar(select(func.count()).select_from(Image).where(Image.dataset_id == dataset.id)):
        raise Unprocessable(
            f"dataset {dataset.name!r} has no images yet: upload some before making a version"
        )
    version = DatasetVersion(
        dataset_id=dataset.id,
        number=repository.next_number(session, dataset.id),
        spec=spec.model_dump(mode="json"),
        status="building",
    )
    session.add(version)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("another version of this dataset was created at the same moment; try again") from None
    enqueue_after_commit(session, tasks, BUILD_VERSION, [str(version.id)])
    return version, dataset


def delete_version(
    session: Session, storage: ObjectStorage, workspace_id: uuid.UUID, version_id: uuid.UUID
) -> None:
    version, dataset = get_version(session, workspace_id, version_id)
    job = repository.job_using(session, version.id)
    if job is not None:
        raise Conflict(
            f"version {version_name(dataset, version)} is used by training job {job}; delete that first"
        )
    model = session.scalar(
        select(Model.id)
        .join(TrainingJob, TrainingJob.id == Model.job_id)
        .where(TrainingJob.version_id == version.id)
    )
    if model is not None:
        raise Conflict(
            f"version {version_name(dataset, version)} is used by model {model}; delete that first"
        )
    prefix = version.snapshot_prefix
    session.delete(version)
    session.flush()
    # Twin versions (same spec, same content) share one snapshot: remove it only with its last user.
    if prefix and not repository.prefix_users(session, prefix):
        after_commit(session, lambda: storage.delete_prefix(prefix))


def version_name(dataset: Dataset, version: DatasetVersion) -> str:
    """'{dataset slug}/{number}': how people, the API and Roboflow's clients (as a model id) name a version."""
    return f"{dataset.slug}/{version.number}"


def describe(version: DatasetVersion, dataset: Dataset) -> VersionOut:
    return VersionOut(
        id=version.id,
        dataset_id=version.dataset_id,
        number=version.number,
        name=version_name(dataset, version),
        status=version.status,  # type: ignore[arg-type]
        progress=round(version.progress, 4),
        spec=VersionSpec.model_validate(version.spec),
        classes=list(version.classes or []),
        splits={s: SplitCounts(**c) for s, c in (version.split_counts or {}).items()},
        dropped=version.dropped or {},
        content_hash=version.content_hash,
        error=version.error,
        created_at=version.created_at,
        ready_at=version.ready_at,
    )


def export_stream(storage: ObjectStorage, version: DatasetVersion) -> Iterator[bytes]:
    """The snapshot as a zip, produced while it is sent: nothing is assembled on disk or in memory."""
    if version.status != "ready" or not version.snapshot_prefix:
        raise Conflict(f"version {version.number} is {version.status}; only a ready version can be exported")
    prefix = version.snapshot_prefix
    zs = ZipStream(compress_type=ZIP_STORED)
    for key in storage.list(prefix):
        zs.add(iter_object(storage, key), key[len(prefix) :])
    return iter(zs)
