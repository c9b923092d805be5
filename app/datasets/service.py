"""Datasets: create, rename, delete, and merge uploads into them."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unicodedata
import uuid
from collections import Counter
from pathlib import Path
from typing import BinaryIO, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from app.core.db import after_commit, on_rollback
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.storage import ObjectStorage
from app.datasets import repository
from app.datasets.ingest import SPLITS, IngestLimits, ParsedUpload, ingest_zip
from app.datasets.ingest.models import MAX_NAME_CHARS
from app.datasets.schemas import ClassOut, DatasetOut, SplitCounts, UploadResult
from app.datasets.tables import Annotation, Category, Dataset, Image
from app.jobs.tables import TrainingJob
from app.metrics.series import UPLOAD_BYTES
from app.settings import Settings
from app.versions.tables import DatasetVersion

_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_INSERT_BATCH = 5000  # annotation rows per INSERT of an upload


class DatasetNotFound(NotFound):
    def __init__(self, dataset_id: uuid.UUID) -> None:
        super().__init__(f"dataset {dataset_id} not found in this workspace")


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:60] or "dataset"


def dataset_prefix(dataset: Dataset) -> str:
    return f"workspaces/{dataset.workspace_id}/datasets/{dataset.id}/"


def limits_from(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_entries=settings.max_zip_entries,
        max_uncompressed_bytes=settings.max_zip_uncompressed_bytes,
        max_ratio=settings.max_zip_ratio,
        max_image_pixels=settings.max_image_pixels,
        max_classes=settings.max_classes,
    )


def get_dataset(session: Session, workspace_id: uuid.UUID, dataset_id: uuid.UUID) -> Dataset:
    dataset = repository.get(session, workspace_id, dataset_id)
    if dataset is None:
        raise DatasetNotFound(dataset_id)
    return dataset


def create_dataset(session: Session, workspace_id: uuid.UUID, name: str) -> Dataset:
    base = slugify(name)
    taken = repository.slugs_like(session, workspace_id, base)
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    dataset = Dataset(workspace_id=workspace_id, name=name, slug=slug)
    session.add(dataset)
    session.flush()
    return dataset


def rename_dataset(session: Session, workspace_id: uuid.UUID, dataset_id: uuid.UUID, name: str) -> Dataset:
    # The slug stays: it is part of every model id ("{slug}/{version}") handed out so far.
    dataset = get_dataset(session, workspace_id, dataset_id)
    dataset.name = name
    session.flush()
    return dataset


def delete_dataset(
    session: Session, storage: ObjectStorage, workspace_id: uuid.UUID, dataset_id: uuid.UUID
) -> None:
    dataset = get_dataset(session, workspace_id, dataset_id)
    in_use = session.scalar(
        select(TrainingJob.id)
        .join(DatasetVersion, DatasetVersion.id == TrainingJob.version_id)
        .where(DatasetVersion.dataset_id == dataset.id)
        .limit(1)
    )
    if in_use is not None:
        raise Conflict(
            f"dataset {dataset.name!r} has versions used by training job {in_use}; delete its models and jobs first"
        )
    # DeclarativeBase declares __table__ a FromClause; a class mapped to a table holds that Table
    versions = cast(Table, DatasetVersion.__table__)
    session.execute(versions.delete().where(DatasetVersion.dataset_id == dataset.id))
    prefix = dataset_prefix(dataset)
    repository.delete_dataset(session, dataset)
    # Objects go only once the rows are gone for good: a failed commit must not leave rows without files.
    after_commit(session, lambda: storage.delete_prefix(prefix))


def describe(session: Session, datasets: list[Dataset]) -> list[DatasetOut]:
    counts = repository.split_counts(session, [d.id for d in datasets])
    out = []
    for d in datasets:
        splits = {s: SplitCounts(images=i, annotations=a) for s, (i, a) in sorted(counts[d.id].items())}
        out.append(
            DatasetOut(
                id=d.id,
                name=d.name,
                slug=d.slug,
                created_at=d.created_at,
                classes=[
                    ClassOut(class_id=c.position, name=c.name) for c in repository.categories(session, d.id)
                ],
                image_count=sum(s.images for s in splits.values()),
                annotation_count=sum(s.annotations for s in splits.values()),
                splits=splits,
            )
        )
    return out


def upload_zip(
    session: Session,
    storage: ObjectStorage,
    settings: Settings,
    workspace_id: uuid.UUID,
    dataset_id: uuid.UUID,
    fileobj: BinaryIO,
    *,
    subset: str | None = None,
) -> UploadResult:
    """Validate the whole zip first, then store its new images and insert their rows.

    Nothing is written until every entry has passed; if storing or inserting fails part-way, the
    objects written so far are deleted when the transaction rolls back."""
    dataset = get_dataset(session, workspace_id, dataset_id)
    UPLOAD_BYTES.labels("zip").observe(fileobj.seek(0, os.SEEK_END))
    fileobj.seek(0)
    staging = Path(tempfile.mkdtemp(dir=settings.tmp_dir, prefix="upload-"))
    try:
        parsed = ingest_zip(fileobj, staging, limits_from(settings), subset=subset)
        return _merge(session, storage, dataset, parsed, max_classes=settings.max_classes)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def add_staged(
    session: Session, storage: ObjectStorage, dataset: Dataset, parsed: ParsedUpload
) -> UploadResult:
    """Merge images that another front door has already validated and staged (Roboflow's one-image upload,
    app/roboflow_api) exactly as a zip's are: new classes added, duplicates by content skipped, objects removed
    again if the transaction rolls back."""
    return _merge(session, storage, dataset, parsed)


def _merge(
    session: Session,
    storage: ObjectStorage,
    dataset: Dataset,
    parsed: ParsedUpload,
    *,
    max_classes: int = IngestLimits.max_classes,
) -> UploadResult:
    if not parsed.images:
        raise Unprocessable("the zip holds no images (JPEG, PNG or WebP)", source="upload")

    # Two uploads at once may share pictures and new classes: both would find them absent, both insert, and
    # one fail on the unique constraint, its rollback deleting objects the other's rows point to (one key per
    # content). Locked first, the second waits and then sees what the first added.
    repository.lock(session, dataset.id)
    known = {c.name: c for c in repository.categories(session, dataset.id)}
    new_names = [n for n in dict.fromkeys(parsed.categories) if n not in known]
    if len(known) + len(new_names) > max_classes:
        raise Unprocessable(
            f"the dataset has {len(known)} classes and this upload adds {len(new_names)}, more than the limit "
            f"of {max_classes} classes per dataset (SAMTUNE_MAX_CLASSES)",
            source="upload",
        )
    long = next((n for n in new_names if len(n) > MAX_NAME_CHARS), None)
    if long is not None:
        raise Unprocessable(
            f"class name '{long[:40]}...' is {len(long)} characters, more than the limit of {MAX_NAME_CHARS}",
            source="upload",
        )
    next_position = max((c.position for c in known.values()), default=-1) + 1
    classes_added: list[str] = []
    for name in parsed.categories:
        if name not in known:
            known[name] = Category(id=uuid.uuid4(), dataset_id=dataset.id, name=name, position=next_position)
            session.add(known[name])
            next_position += 1
            classes_added.append(name)

    already = repository.existing_shas(session, dataset.id, [im.sha256 for im in parsed.images])
    fresh = [im for im in parsed.images if im.sha256 not in already]
    warnings = list(parsed.warnings)
    if already:
        warnings.append(
            f"{len(already)} image(s) were already in the dataset (same content); they and their "
            "annotations in this upload were skipped"
        )

    written: list[str] = []

    def delete_written() -> None:
        for k in written:
            storage.delete(k)

    on_rollback(session, delete_written)
    image_rows: list[dict[str, object]] = []
    added: Counter[tuple[str, str]] = Counter()
    prefix = dataset_prefix(dataset)
    image_ids: list[uuid.UUID] = []
    for im in fresh:
        key = f"{prefix}images/{im.sha256}{_EXT[im.format]}"
        size = im.staged_path.stat().st_size
        storage.put_file(key, im.staged_path, move=True)
        written.append(key)
        image_id = uuid.uuid4()
        image_ids.append(image_id)
        image_rows.append(
            {
                "id": image_id,
                "dataset_id": dataset.id,
                "object_key": key,
                "sha256": im.sha256,
                "file_name": im.source.rsplit("/", 1)[-1][:500],
                "format": im.format,
                "size_bytes": size,
                "width": im.width,
                "height": im.height,
                "split": im.split,
            }
        )
        added[(im.split, "images")] += 1

    session.flush()
    if image_rows:
        session.execute(insert(Image), image_rows)
    # Annotations go in batches, each image's read from the staging folder as it comes (ingest/spill.py): a
    # 433k-annotation upload never has all its rows in memory at once. One transaction all the same.
    annotation_rows: list[dict[str, object]] = []
    for im, image_id in zip(fresh, image_ids, strict=True):
        for ann in im.annotations:
            annotation_rows.append(
                {
                    "id": uuid.uuid4(),
                    "image_id": image_id,
                    "category_id": known[ann.category].id,
                    "bbox": [float(v) for v in ann.bbox],
                    "segmentation": ann.segmentation,
                    "area": float(ann.area),
                    "iscrowd": bool(ann.iscrowd),
                }
            )
            added[(im.split, "annotations")] += 1
        if len(annotation_rows) >= _INSERT_BATCH:
            session.execute(insert(Annotation), annotation_rows)
            annotation_rows = []
    if annotation_rows:
        session.execute(insert(Annotation), annotation_rows)
    session.flush()

    per_split = {
        s: SplitCounts(images=added[(s, "images")], annotations=added[(s, "annotations")])
        for s in SPLITS
        if added[(s, "images")]
    }
    return UploadResult(
        layout=parsed.layout,
        added=per_split,
        duplicates_skipped=len(already),
        classes_found=list(parsed.categories),
        classes_added=classes_added,
        warnings=warnings,
    )
