from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, utcnow


class Worker(Base):
    """A training worker that says it is alive: what it has (devices), refreshed by its heartbeat. The API reads
    it to refuse a job asking for more devices than any live worker has; a row not refreshed for
    `registry.LIVE_SECONDS` is a worker gone (stopped, or killed without saying so)."""

    __tablename__ = "worker"

    # Celery's node name (`celery@host`, or what `-n` gave), unique among running workers.
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), nullable=False)
    device_type: Mapped[str] = mapped_column(String(16), nullable=False)  # "cuda" | "cpu"
    # CUDA devices, or on a CPU worker the gloo processes SAMTUNE_WORKER_DEVICES allows.
    devices: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
