from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class EndedSession(Base):
    """A web UI session that was signed out before its cookie expired. The cookie is signed, not stored, so
    it would stay valid for its 7 days; the session's nonce kept here (until that expiry, then pruned) makes
    every later request with it a signed-out one, on every API process."""

    __tablename__ = "ended_session"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
