from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, CreatedAtMixin, IdMixin


class Workspace(IdMixin, CreatedAtMixin, Base):
    """The owner of everything: every other row is reachable from exactly one workspace."""

    __tablename__ = "workspace"

    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
