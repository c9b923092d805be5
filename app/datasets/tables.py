from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, CreatedAtMixin, IdMixin


class Dataset(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("workspace_id", "slug"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workspace.id", ondelete="CASCADE"), index=True, nullable=False
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    # The project half of Roboflow-style model ids ("{slug}/{version}"): unique per workspace, never reused.
    slug: Mapped[str] = mapped_column(String(200), nullable=False)


class Category(IdMixin, Base):
    """A class of a dataset. Uploads are merged by class name; `position` is the stable class_id."""

    __tablename__ = "category"
    __table_args__ = (UniqueConstraint("dataset_id", "name"), UniqueConstraint("dataset_id", "position"))

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("dataset.id", ondelete="CASCADE"), index=True, nullable=False
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)


class Image(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "image"
    # One stored copy per content hash per dataset: the same file uploaded twice is not stored twice.
    __table_args__ = (UniqueConstraint("dataset_id", "sha256"),)

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("dataset.id", ondelete="CASCADE"), index=True, nullable=False
    )
    object_key: Mapped[str] = mapped_column(String(500), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    file_name: Mapped[str] = mapped_column(String(500), nullable=False)
    format: Mapped[str] = mapped_column(String(10), nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    split: Mapped[str] = mapped_column(String(10), nullable=False, index=True)


class Annotation(IdMixin, Base):
    __tablename__ = "annotation"

    image_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("image.id", ondelete="CASCADE"), index=True, nullable=False
    )
    category_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("category.id", ondelete="CASCADE"), index=True, nullable=False
    )
    # COCO conventions: bbox is [x, y, w, h] in image pixels; segmentation is a list of polygon parts
    # or a compressed RLE dict, or null for box-only instances.
    bbox: Mapped[list[float]] = mapped_column(JSON, nullable=False)
    segmentation: Mapped[Any] = mapped_column(JSON, nullable=True)
    area: Mapped[float] = mapped_column(Float, nullable=False)
    iscrowd: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
