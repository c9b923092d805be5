from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, CreatedAtMixin, IdMixin, UTCDateTime, utcnow
from app.core.lease import LeaseColumns

if TYPE_CHECKING:
    from app.versions.tables import DatasetVersion


class TrainingJob(IdMixin, CreatedAtMixin, LeaseColumns, Base):
    """The record of a fine-tuning run. The database row, not the queue, owns the job's state."""

    __tablename__ = "training_job"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workspace.id", ondelete="CASCADE"), index=True, nullable=False
    )
    version_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("dataset_version.id", ondelete="RESTRICT"), index=True, nullable=False
    )
    base_model: Mapped[str] = mapped_column(String(500), nullable=False)
    # The workspace model it continues from, when its base is one (else None: a catalog base model). No foreign
    # key: that model may be deleted later; a job still queued then fails saying so (app/jobs/runner.py).
    base_model_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The base's name, then the base of that base...: ["shapes/2 (model <id>)", "samtune/sam3-tiny-shapes"].
    # None on jobs made before it was kept; they read as [base_model].
    base_lineage: Mapped[list[str] | None] = mapped_column(JSON)
    mode: Mapped[str] = mapped_column(String(20), nullable=False)
    # The devices (DDP processes) asked for; None: not asked, one.
    gpus: Mapped[int | None] = mapped_column(Integer)
    # What the user set (TrainConfig field -> value); the worker resolves the rest on its own device.
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")
    # Resolved hyperparameters: {name: {"value": ..., "reason": "..."}}.
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued", index=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_restarts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    stop_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # What the job page shows (step, rate, best validation); rewritten whole by every heartbeat.
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # What a resume starts from: the last fully uploaded `last` checkpoint (prefix, step) and the attempt prefix
    # holding the best one. Columns of their own, moved only by the lease holder's fenced update, never by
    # the heartbeat's write of `progress`.
    checkpoint_prefix: Mapped[str | None] = mapped_column(String(500))
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)
    best_checkpoint_prefix: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a message for it was last sent: a job queued long after that lost its message (broker restarted).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the base model was, in words, as the worker that loaded it described it.
    base_model_description: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_secret: Mapped[str | None] = mapped_column(String(100))

    # For joins only (repository.lineage); touching it unloaded raises rather than querying.
    version: Mapped[DatasetVersion] = relationship(lazy="raise")


class JobEvent(Base):
    """What happened to a job, in order: status changes, restarts, rollbacks, stops, and its log lines.
    The id orders them and names them in the event stream."""

    __tablename__ = "job_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("training_job.id", ondelete="CASCADE"), index=True, nullable=False
    )
    kind: Mapped[str] = mapped_column(String(30), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class Metric(Base):
    __tablename__ = "metric"
    # Fenced, idempotent writes: a redone step overwrites its own point instead of duplicating it.
    __table_args__ = (UniqueConstraint("job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("training_job.id", ondelete="CASCADE"), index=True, nullable=False
    )
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    epoch: Mapped[float] = mapped_column(Float, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
