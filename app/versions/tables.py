from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, CreatedAtMixin, IdMixin, UTCDateTime
from app.core.lease import LeaseColumns

if TYPE_CHECKING:
    from app.datasets.tables import Dataset


class DatasetVersion(IdMixin, CreatedAtMixin, LeaseColumns, Base):
    """A frozen snapshot of a dataset: immutable once `ready`."""

    __tablename__ = "dataset_version"
    __table_args__ = (UniqueConstraint("dataset_id", "number"),)

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("dataset.id", ondelete="CASCADE"), index=True, nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="building")
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    split_counts: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    dropped: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # The version's own class list (after remapping); category_id in its COCO files = index + 1.
    classes: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    snapshot_prefix: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Liveness of the build is its lease (LeaseColumns): the reaper re-enqueues a build whose lease expired.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")

    # For joins only (app/jobs/repository.lineage); touching it unloaded raises rather than querying.
    dataset: Mapped[Dataset] = relationship(lazy="raise")
