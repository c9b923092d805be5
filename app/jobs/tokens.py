"""Short-lived signed tokens for a job's event stream: browsers' EventSource cannot send headers, and an
API key in a URL lives on in histories and logs.

A token names the API key it was issued to (the UI session's key for a cookie), and the stream checks that key's
row on every connection: revoking the key ends its tokens at once, not 15 minutes later."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass

from app.core.errors import Unauthorized

TOKEN_SECONDS = 15 * 60


def _sign(key: bytes, payload: str) -> str:
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


@dataclass(frozen=True)
class TokenGrant:
    workspace_id: uuid.UUID
    api_key_id: uuid.UUID  # the key that asked for the token: the stream refuses it once that key is revoked


def issue(
    key: bytes,
    job_id: uuid.UUID,
    workspace_id: uuid.UUID,
    api_key_id: uuid.UUID,
    *,
    now: float | None = None,
) -> tuple[str, int]:
    expires = int((now or time.time()) + TOKEN_SECONDS)
    payload = f"{job_id}.{workspace_id}.{api_key_id.hex}.{expires}"
    return f"{payload}.{_sign(key, payload)}", expires


def verify(key: bytes, token: str, job_id: uuid.UUID, *, now: float | None = None) -> TokenGrant:
    """Whom the token was issued to; 401 if it is forged, expired, or for another job. Whether its key is
    still valid is the caller's to check (a database read: `app.jobs.router`)."""
    try:
        job, workspace, api_key, expires, mac = token.split(".")
        payload = f"{job}.{workspace}.{api_key}.{expires}"
        valid = hmac.compare_digest(mac, _sign(key, payload))
        if not valid:
            raise ValueError
        if uuid.UUID(job) != job_id:
            raise Unauthorized("this event token is for another job")
        if int(expires) < (now or time.time()):
            raise Unauthorized("the event token has expired; ask for a new one (POST .../events-token)")
        return TokenGrant(uuid.UUID(workspace), uuid.UUID(hex=api_key))
    except (ValueError, TypeError):
        raise Unauthorized("invalid event token") from None
