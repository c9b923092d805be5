"""The web UI's session: a signed cookie naming the API key the user signed in with, and a CSRF token
bound to that cookie.

The cookie holds the key's id and an expiry, never the key itself, so a leaked cookie does not leak the
secret, and revoking the key ends every session made with it (each request re-reads the key's row). Signing
out ends the session on the server too: its nonce goes into `ended_session` until the cookie's expiry, and
every request checks it, so a copy of the cookie taken before sign-out is refused by every API process. It is
HttpOnly (page scripts cannot read it) and SameSite=Lax (other sites' forms and fetches do not carry it on
POST). The CSRF token is an HMAC of the cookie value: the page receives it in a <meta> tag and sends it back
in `X-CSRF-Token` on every unsafe request, which a cross-site page cannot read or forge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.core.errors import AppError, Unauthorized
from app.keys.service import Principal
from app.keys.tables import ApiKey
from app.ui.tables import EndedSession

SESSION_COOKIE = "samtune_session"
SIGNIN_COOKIE = "samtune_signin"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 7 * 24 * 3600
SIGNIN_SECONDS = 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_VERSION = "v1"


def _mac(key: bytes, purpose: str, payload: str) -> str:
    digest = hmac.new(key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue_session(key: bytes, api_key_id: uuid.UUID, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + SESSION_SECONDS)
    # The nonce makes every sign-in its own session with its own CSRF token, even for one key.
    payload = f"{_VERSION}.{api_key_id.hex}.{expires}.{secrets.token_hex(8)}"
    return f"{payload}.{_mac(key, 'session', payload)}"


@dataclass(frozen=True)
class SessionCookie:
    api_key_id: uuid.UUID
    nonce: str
    expires: int


def parse_session(key: bytes, cookie: str, *, now: float | None = None) -> SessionCookie | None:
    """What a genuine, unexpired cookie says, or None when it is forged, malformed or expired (whether it
    was signed out is the database's to say: `is_ended`)."""
    try:
        version, key_hex, expires, nonce, mac = cookie.split(".")
        payload = f"{version}.{key_hex}.{expires}.{nonce}"
        if version != _VERSION or not hmac.compare_digest(mac, _mac(key, "session", payload)):
            return None
        if int(expires) < (time.time() if now is None else now):
            return None
        return SessionCookie(uuid.UUID(hex=key_hex), nonce, int(expires))
    except (ValueError, TypeError):
        return None


def session_key_id(key: bytes, cookie: str, *, now: float | None = None) -> uuid.UUID | None:
    """The API key id the cookie was issued for, or None when it is forged, malformed or expired."""
    parsed = parse_session(key, cookie, now=now)
    return parsed.api_key_id if parsed else None


def is_ended(session: Session, cookie: SessionCookie) -> bool:
    return session.get(EndedSession, cookie.nonce) is not None


def end_session(session: Session, key: bytes, cookie: str) -> None:
    """Sign-out: the session is refused from now on, whoever holds a copy of its cookie. Rows of sessions
    whose cookies have expired anyway are pruned here, so the table holds at most 7 days of sign-outs."""
    parsed = parse_session(key, cookie)
    if parsed is None:
        return
    session.execute(delete(EndedSession).where(EndedSession.expires_at < datetime.now(UTC)))
    if not is_ended(session, parsed):
        session.add(EndedSession(nonce=parsed.nonce, expires_at=datetime.fromtimestamp(parsed.expires, UTC)))
        session.flush()


def csrf_token(key: bytes, cookie: str) -> str:
    return _mac(key, "csrf", cookie)


def csrf_matches(key: bytes, cookie: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(presented or "", csrf_token(key, cookie))


def csrf_matches_plain(expected: str, presented: str | None) -> bool:
    return bool(expected) and bool(presented) and hmac.compare_digest(presented or "", expected)


def new_signin_nonce() -> str:
    return secrets.token_urlsafe(24)


def signin_token(key: bytes, nonce: str) -> str:
    """The sign-in form's hidden CSRF field: it must come with the pre-session cookie holding `nonce`, which
    stops another site from signing a visitor in under the attacker's key."""
    return _mac(key, "signin", nonce)


@dataclass(frozen=True)
class UiSession:
    principal: Principal
    key_prefix: str
    csrf: str


def principal_for_key_id(session: Session, api_key_id: uuid.UUID) -> tuple[Principal, ApiKey]:
    row = session.get(ApiKey, api_key_id)
    if row is None:
        raise Unauthorized("your session's API key no longer exists; sign in again")
    if row.revoked_at is not None:
        raise Unauthorized("the API key of this session has been revoked; sign in with another key")
    principal = Principal(workspace_id=row.workspace_id, key_id=row.id, scopes=tuple(row.scopes or ()))
    return principal, row


def authenticate_cookie(
    session: Session, key: bytes, cookie: str, method: str, presented_csrf: str | None
) -> Principal:
    """The principal of a cookie-authenticated API request; unsafe methods also need the CSRF header."""
    parsed = parse_session(key, cookie)
    if parsed is None:
        raise Unauthorized("the session has expired or is not valid; sign in again")
    if is_ended(session, parsed):
        raise Unauthorized("this session was signed out; sign in again")
    if method.upper() not in SAFE_METHODS and not csrf_matches(key, cookie, presented_csrf):
        raise AppError(
            f"a cookie-authenticated {method.upper()} needs the {CSRF_HEADER} header of this session "
            "(the web UI sends it; API clients should use 'Authorization: Bearer <key>' instead)",
            status_code=403,
            title="CSRF token missing or wrong",
        )
    return principal_for_key_id(session, parsed.api_key_id)[0]


def load_ui_session(session: Session, key: bytes, cookie: str | None) -> UiSession | None:
    """The signed-in user of an HTML page, or None (the page then redirects to sign-in)."""
    parsed = parse_session(key, cookie) if cookie else None
    if parsed is None or cookie is None or is_ended(session, parsed):
        return None
    try:
        principal, row = principal_for_key_id(session, parsed.api_key_id)
    except Unauthorized:
        return None
    return UiSession(principal=principal, key_prefix=row.prefix, csrf=csrf_token(key, cookie))
