from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from app.core.deps import CurrentPrincipal, SessionDep
from app.core.pagination import Page, PageDep
from app.keys import service
from app.keys.schemas import KeyCreate, KeyCreated, KeyOut

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


@router.get(
    "",
    summary="List API keys",
    description="The keys of your workspace: name, prefix, creation and revocation times, last use. Never the secret (it is shown once, when the key is made).",
    response_model=Page[KeyOut],
)
def list_keys(session: SessionDep, principal: CurrentPrincipal, params: PageDep) -> Page[KeyOut]:
    keys, total = service.page_keys(session, principal.workspace_id, params)
    return params.page([KeyOut.model_validate(k) for k in keys], total)


@router.post("", summary="Create an API key", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
def create_key(body: KeyCreate, session: SessionDep, principal: CurrentPrincipal) -> KeyCreated:
    """A new key for your workspace, optionally named `name`. 201 with the secret in `key`: it is shown this
    once, store it now. 422 for a name over 100 characters."""
    row, secret = service.create_key(session, principal.workspace_id, body.name)
    return KeyCreated.model_validate({**KeyOut.model_validate(row).model_dump(), "key": secret})


@router.delete("/{key_id}", summary="Revoke an API key", response_model=KeyOut)
def revoke_key(
    key_id: uuid.UUID, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> KeyOut:
    """Revoke one of your workspace's keys: from now on it answers 401, its open event streams end and its
    event tokens stop working. Answers the key with `revoked_at`. 404 for a key of another workspace."""
    revoked = service.revoke(session, principal.workspace_id, key_id)
    # This process forgets it now; the others within SAMTUNE_AUTH_CACHE_SECONDS (app/core/short_cache.py).
    request.app.state.principals.forget(key_id)
    return KeyOut.model_validate(revoked)
