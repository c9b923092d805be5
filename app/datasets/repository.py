"""Every query the datasets package makes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.orm import Session

from app.core.pagination import PageParams, fetch_page
from app.datasets.tables import Annotation, Category, Dataset, Image

_SHA_BATCH = 500


def get(session: Session, workspace_id: uuid.UUID, dataset_id: uuid.UUID) -> Dataset | None:
    stmt = select(Dataset).where(Dataset.id == dataset_id, Dataset.workspace_id == workspace_id)
    return session.scalars(stmt).one_or_none()


def lock(session: Session, dataset_id: uuid.UUID) -> None:
    """Hold the dataset until the transaction ends: an UPDATE that changes nothing still locks its row on
    PostgreSQL and takes the write lock on SQLite (where SELECT ... FOR UPDATE would not)."""
    session.execute(update(Dataset).where(Dataset.id == dataset_id).values(name=Dataset.name))


def list_for_workspace(session: Session, workspace_id: uuid.UUID) -> list[Dataset]:
    stmt = select(Dataset).where(Dataset.workspace_id == workspace_id).order_by(Dataset.created_at)
    return list(session.scalars(stmt))


def page_for_workspace(
    session: Session, workspace_id: uuid.UUID, params: PageParams
) -> tuple[list[Dataset], int]:
    """The workspace's datasets, newest first."""
    stmt = (
        select(Dataset)
        .where(Dataset.workspace_id == workspace_id)
        .order_by(Dataset.created_at.desc(), Dataset.id.desc())
    )
    return fetch_page(session, stmt, params, lambda r: r[0])


def slugs_like(session: Session, workspace_id: uuid.UUID, base: str) -> set[str]:
    stmt = select(Dataset.slug).where(Dataset.workspace_id == workspace_id, Dataset.slug.like(f"{base}%"))
    return set(session.scalars(stmt))


def categories(session: Session, dataset_id: uuid.UUID) -> list[Category]:
    stmt = select(Category).where(Category.dataset_id == dataset_id).order_by(Category.position)
    return list(session.scalars(stmt))


def existing_shas(session: Session, dataset_id: uuid.UUID, shas: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(shas), _SHA_BATCH):
        batch = shas[start : start + _SHA_BATCH]
        stmt = select(Image.sha256).where(Image.dataset_id == dataset_id, Image.sha256.in_(batch))
        found.update(session.scalars(stmt))
    return found


def split_counts(
    session: Session, dataset_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, dict[str, tuple[int, int]]]:
    ids = list(dataset_ids)
    out: dict[uuid.UUID, dict[str, tuple[int, int]]] = {i: {} for i in ids}
    if not ids:
        return out
    images = select(Image.dataset_id, Image.split, func.count()).where(Image.dataset_id.in_(ids))
    for ds, split, n in session.execute(images.group_by(Image.dataset_id, Image.split)):
        out[ds][split] = (n, 0)
    anns = (
        select(Image.dataset_id, Image.split, func.count())
        .join(Annotation, Annotation.image_id == Image.id)
        .where(Image.dataset_id.in_(ids))
        .group_by(Image.dataset_id, Image.split)
    )
    for ds, split, n in session.execute(anns):
        out[ds][split] = (out[ds].get(split, (0, 0))[0], n)
    return out


def image_rows(session: Session, dataset_id: uuid.UUID) -> Sequence[Row]:
    stmt = select(Image.id, Image.split, Image.width, Image.height).where(Image.dataset_id == dataset_id)
    return session.execute(stmt).all()


def annotation_rows(session: Session, dataset_id: uuid.UUID) -> Sequence[Row]:
    stmt = (
        select(Annotation.image_id, Annotation.category_id, Annotation.bbox, Image.width, Image.height)
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.dataset_id == dataset_id)
    )
    return session.execute(stmt).all()


def page_images(
    session: Session,
    dataset_id: uuid.UUID,
    *,
    split: str | None,
    category_id: uuid.UUID | None,
    params: PageParams,
) -> tuple[list[Image], int]:
    """A page of the dataset's images, oldest first (upload order)."""
    stmt = select(Image).where(Image.dataset_id == dataset_id)
    if split:
        stmt = stmt.where(Image.split == split)
    if category_id is not None:
        has_class = select(Annotation.image_id).where(Annotation.category_id == category_id)
        stmt = stmt.where(Image.id.in_(has_class))
    return fetch_page(session, stmt.order_by(Image.created_at, Image.id), params, lambda r: r[0])


def classes_per_image(
    session: Session, image_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[str, int]]]:
    """For each image: (class name, instance count) pairs."""
    out: dict[uuid.UUID, list[tuple[str, int]]] = {i: [] for i in image_ids}
    if not image_ids:
        return out
    stmt = (
        select(Annotation.image_id, Category.name, func.count())
        .join(Category, Category.id == Annotation.category_id)
        .where(Annotation.image_id.in_(image_ids))
        .group_by(Annotation.image_id, Category.name)
    )
    for image_id, name, n in session.execute(stmt):
        out[image_id].append((name, n))
    return out


def get_image(session: Session, dataset_id: uuid.UUID, image_id: uuid.UUID) -> Image | None:
    stmt = select(Image).where(Image.id == image_id, Image.dataset_id == dataset_id)
    return session.scalars(stmt).one_or_none()


def annotations_of(session: Session, image_id: uuid.UUID) -> list[tuple[Annotation, Category]]:
    stmt = (
        select(Annotation, Category)
        .join(Category, Category.id == Annotation.category_id)
        .where(Annotation.image_id == image_id)
        .order_by(Annotation.id)
    )
    return [(a, c) for a, c in session.execute(stmt)]


def delete_dataset(session: Session, dataset: Dataset) -> None:
    # Bulk deletes, children first, so that deleting a large dataset is a handful of statements
    # on every backend (SQLite's cascade depends on a per-connection pragma).
    image_ids = select(Image.id).where(Image.dataset_id == dataset.id)
    session.execute(delete(Annotation).where(Annotation.image_id.in_(image_ids)))
    session.execute(delete(Image).where(Image.dataset_id == dataset.id))
    session.execute(delete(Category).where(Category.dataset_id == dataset.id))
    session.delete(dataset)
    session.flush()
