from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.pagination import PageParams, fetch_page
from app.keys.tables import ApiKey


def by_prefix(session: Session, prefix: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()


def page_for_workspace(
    session: Session, workspace_id: uuid.UUID, params: PageParams
) -> tuple[list[ApiKey], int]:
    stmt = (
        select(ApiKey)
        .where(ApiKey.workspace_id == workspace_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return fetch_page(session, stmt, params, lambda r: r[0])


def get_in_workspace(session: Session, workspace_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.workspace_id == workspace_id, ApiKey.id == key_id)
    return session.scalars(stmt).one_or_none()
