from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, CreatedAtMixin, IdMixin, UTCDateTime
from app.core.lease import LeaseColumns

if TYPE_CHECKING:
    from app.jobs.tables import TrainingJob


class Model(IdMixin, CreatedAtMixin, Base):
    """A fine-tuned checkpoint that the predict endpoint can serve."""

    __tablename__ = "model"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workspace.id", ondelete="CASCADE"), index=True, nullable=False
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("training_job.id", ondelete="RESTRICT"), unique=True, nullable=False
    )
    # '{dataset slug}/{number}' of the version it learned from: its Roboflow-style model id.
    version_name: Mapped[str] = mapped_column(String(200), nullable=False)
    checkpoint_prefix: Mapped[str] = mapped_column(String(500), nullable=False)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    # {"best_valid": {metric: value}, "test": {"base": EvalResult, "fine_tuned": EvalResult}}: the run
    # result's keys (EvalResult: trainer.evaluate's to_dict(), a summary and per-class AP).
    eval_results: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="ready")
    # Scored below its base on the test split (mask AP): the version's `slug/N` alias skips it until promoted.
    regression: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    # When the user last made it the version's `slug/N` model explicitly (POST /api/v1/models/{id}/promote).
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # For joins only (app/jobs/repository.lineage): loading it by touching the attribute raises, so a query
    # that forgot it fails in tests instead of issuing one more SELECT per model.
    job: Mapped[TrainingJob] = relationship(lazy="raise")


class BatchPrediction(IdMixin, CreatedAtMixin, LeaseColumns, Base):
    """A model run over one split of a data version, in the background; results as COCO results JSON."""

    __tablename__ = "batch_prediction"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workspace.id", ondelete="CASCADE"), index=True, nullable=False
    )
    model_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model.id", ondelete="CASCADE"), index=True, nullable=False
    )
    version_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("dataset_version.id", ondelete="CASCADE"), index=True, nullable=False
    )
    split: Mapped[str] = mapped_column(String(10), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued")
    num_images: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    num_detections: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    result_key: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Mask NMS as the predict routes apply it (trainer.evaluate.mask_nms); kept here because the reaper sends
    # a batch again with its id alone.
    iou_threshold: Mapped[float] = mapped_column(Float, nullable=False, default=0.5, server_default="0.5")
    class_agnostic_nms: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # Claimed with a lease like a training job (app/core/lease.py): a worker killed mid-batch is noticed.
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # When its message was last sent (NULL: when it was created); the reaper sends again a batch that sat
    # queued long after it (lease.forgotten: the message was lost).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
