"""API keys: created once (the secret is shown only then), stored as prefix + SHA-256, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import NotFound, Unauthorized
from app.core.pagination import PageParams
from app.keys import repository
from app.keys.tables import ApiKey
from app.workspaces import service as workspaces

KEY_PREFIX = "st_"
_PREFIX_LEN = len(KEY_PREFIX) + 8
# Recording last use on every request would turn every read into a write; once a minute is plenty.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    workspace_id: uuid.UUID
    key_id: uuid.UUID
    scopes: tuple[str, ...]


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, workspace_id: uuid.UUID, name: str = "") -> tuple[ApiKey, str]:
    secret = KEY_PREFIX + secrets.token_hex(4) + secrets.token_hex(20)
    row = ApiKey(workspace_id=workspace_id, name=name, prefix=secret[:_PREFIX_LEN], key_hash=_hash(secret))
    session.add(row)
    session.flush()
    return row, secret


def create_key_for_workspace(session: Session, workspace_name: str, name: str = "") -> tuple[ApiKey, str]:
    workspace = workspaces.get_or_create(session, workspace_name)
    return create_key(session, workspace.id, name)


def required(presented: str | None) -> str:
    """The presented key, or the 401 that asks for one."""
    if not presented:
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' (create one with "
            "`samtune keys create --workspace NAME`)"
        )
    return presented


def authenticate(session: Session, presented: str | None) -> Principal:
    presented = required(presented).strip()
    row = repository.by_prefix(session, presented[:_PREFIX_LEN]) if presented.startswith(KEY_PREFIX) else None
    if row is None or not hmac.compare_digest(row.key_hash, _hash(presented)):
        raise Unauthorized("the API key is not valid")
    if row.revoked_at is not None:
        raise Unauthorized("the API key has been revoked")
    now = utcnow()
    last = row.last_used_at
    if last is None or now - last > _LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.flush()
    return Principal(workspace_id=row.workspace_id, key_id=row.id, scopes=tuple(row.scopes or ()))


def page_keys(session: Session, workspace_id: uuid.UUID, params: PageParams) -> tuple[list[ApiKey], int]:
    """The workspace's keys, newest first (revoked ones too, marked)."""
    return repository.page_for_workspace(session, workspace_id, params)


def revoke(session: Session, workspace_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    row = repository.get_in_workspace(session, workspace_id, key_id)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row
