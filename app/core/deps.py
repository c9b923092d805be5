"""Request-scoped dependencies: settings, the database session (committed at the request boundary),
object storage and the authenticated workspace (API key, or the web UI's session cookie)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.db import transaction
from app.core.limits import checked_principal
from app.core.queue import TaskQueue
from app.core.short_cache import ShortCache
from app.core.storage import ObjectStorage
from app.keys import service as keys
from app.keys.service import Principal
from app.settings import Settings
from app.ui import session as ui_session


# The plain look-ups are `async def` so that FastAPI calls them on the event loop: a sync dependency costs a
# round trip through the thread pool on every request.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with transaction(request.app.state.sessionmaker) as session:
        yield session


async def get_storage(request: Request) -> ObjectStorage:
    return request.app.state.storage


async def get_tasks(request: Request) -> TaskQueue:
    return request.app.state.tasks


SettingsDep = Annotated[Settings, Depends(get_settings)]
TasksDep = Annotated[TaskQueue, Depends(get_tasks)]
# scope="function": commit before the response is sent. With the default ("request") the commit ran after the
# body went out, so a client could get 201 and then a 404 for what it had just created (or a 2xx for a
# transaction whose commit then failed).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StorageDep = Annotated[ObjectStorage, Depends(get_storage)]


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            return value
    # Roboflow's clients send the key as a query parameter; access logs redact it (app/core/logging.py).
    return request.query_params.get("api_key")


@contextmanager
def own_session(request: Request) -> Iterator[Session]:
    """Blocking: a transaction of its own, for work done outside a route's `SessionDep` (a middleware, or an
    async dependency that needs the database only now and then). The session comes from `get_session` as the
    routes get it, an override of it included (a test's database, say), so it reads where the routes would."""
    provider: Any = request.app.dependency_overrides.get(get_session, get_session)
    args = (request,) if inspect.signature(provider).parameters else ()
    with contextmanager(provider)(*args) as session:
        yield session


def _authenticate_in_own_session(request: Request, key: str) -> Principal:
    with own_session(request) as session:
        return keys.authenticate(session, key)


async def authenticate_key(request: Request, key: str) -> Principal:
    """The key's principal, for app.core.limits' middlewares, which run before any route (and its session)
    does: remembered by this process for SAMTUNE_AUTH_CACHE_SECONDS (app/core/short_cache.py), else checked
    in a transaction of its own on the thread pool. Unauthorized for a wrong or revoked key."""
    principals: ShortCache[Principal] = request.app.state.principals
    digest = hashlib.sha256(key.encode()).digest()
    principal = principals.get(digest)
    if principal is None:
        principal = await run_in_threadpool(_authenticate_in_own_session, request, key)
        principals.put(digest, principal.key_id, principal)
    return principal


# The two ways an API client presents its key, as the OpenAPI document declares them: every operation that
# depends on `get_principal` (or lists AUTH_SCHEMES) names them, so /docs has an Authorize button. With
# auto_error=False they refuse nothing themselves; `presented_key` reads the key, the one spelling that
# KeyBeforeBody and Roboflow's routes share (APIKeyQuery would take an empty `?api_key=` as no key and fall
# back to the cookie, where presented_key answers 401).
bearer_scheme = HTTPBearer(
    scheme_name="bearer",
    description="An API key (`st_...`) in `Authorization: Bearer <key>`. Make one with "
    "`samtune keys create --workspace NAME` or `POST /api/v1/keys`.",
    auto_error=False,
)
api_key_scheme = APIKeyQuery(
    name="api_key",
    scheme_name="api_key",
    description="The same key as the query parameter `api_key`, as Roboflow's clients send it (redacted from logs).",
    auto_error=False,
)
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
QueryKey = Annotated[str | None, Security(api_key_scheme)]
# For routes that authenticate without `get_principal` (a token or a key, a key in the body): `dependencies=`.
AUTH_SCHEMES = [Security(bearer_scheme), Security(api_key_scheme)]


async def get_principal(request: Request, _bearer: BearerKey = None, _api_key: QueryKey = None) -> Principal:
    """The caller: an API key (Bearer header or ?api_key=) or, failing that, the web UI's session cookie.

    On the event loop, and without a session of the route's: a request with a body had its key checked by
    KeyBeforeBody moments ago, and a prediction then costs no trip through the thread pool nor a database
    session for it (two of them, to open and to close, were a tenth of a tiny model's predict latency). The
    others are checked in a short transaction of their own (`resolve_principal`)."""
    key = presented_key(request)
    checked = checked_principal(request.scope, key)
    if checked is not None:
        return checked  # KeyBeforeBody checked this very key moments ago
    if key is not None:
        return await authenticate_key(request, key)
    return await run_in_threadpool(_resolve_in_own_session, request)


def _resolve_in_own_session(request: Request) -> Principal:
    with own_session(request) as session:
        return resolve_principal(request, session)


def resolve_principal(request: Request, session: Session) -> Principal:
    """Blocking: the caller's key or UI session, checked in `session`. A presented key wins, so API clients
    never need the UI's CSRF header even if a cookie is around."""
    key = presented_key(request)
    cookie = request.cookies.get(ui_session.SESSION_COOKIE)
    if key is None and cookie:
        return ui_session.authenticate_cookie(
            session,
            request.app.state.settings.signing_key,
            cookie,
            request.method,
            request.headers.get(ui_session.CSRF_HEADER),
        )
    return keys.authenticate(session, key)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
