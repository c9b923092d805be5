"""Short-lived signed tokens for a job's event stream: browsers' EventSource cannot send headers, and an
API key in a URL lives on in histories and logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

from app.core.errors import Unauthorized

TOKEN_SECONDS = 15 * 60


def _sign(key: bytes, payload: str) -> str:
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def issue(
    key: bytes, job_id: uuid.UUID, workspace_id: uuid.UUID, *, now: float | None = None
) -> tuple[str, int]:
    expires = int((now or time.time()) + TOKEN_SECONDS)
    payload = f"{job_id}.{workspace_id}.{expires}"
    return f"{payload}.{_sign(key, payload)}", expires


def verify(key: bytes, token: str, job_id: uuid.UUID, *, now: float | None = None) -> uuid.UUID:
    """The workspace the token was issued for; 401 if it is forged, expired, or for another job."""
    try:
        job, workspace, expires, mac = token.split(".")
        payload = f"{job}.{workspace}.{expires}"
        valid = hmac.compare_digest(mac, _sign(key, payload))
        if not valid:
            raise ValueError
        if uuid.UUID(job) != job_id:
            raise Unauthorized("this event token is for another job")
        if int(expires) < (now or time.time()):
            raise Unauthorized("the event token has expired; ask for a new one (POST .../events-token)")
        return uuid.UUID(workspace)
    except (ValueError, TypeError):
        raise Unauthorized("invalid event token") from None
