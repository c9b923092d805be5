from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import Unprocessable
from app.workspaces.tables import Workspace


def get_or_create(session: Session, name: str) -> Workspace:
    name = name.strip()
    if not name or len(name) > 100:
        raise Unprocessable("a workspace name must be 1 to 100 characters")
    workspace = session.scalars(select(Workspace).where(Workspace.name == name)).one_or_none()
    if workspace is None:
        workspace = Workspace(name=name)
        session.add(workspace)
        session.flush()
    return workspace
