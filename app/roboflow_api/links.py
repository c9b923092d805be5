"""Signed, short-lived links to a version's export. The SDK downloads the link it is given with a plain GET and
prints it when the download fails, so the link carries a token for that one version instead of the API key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

from app.core.errors import Unauthorized

LINK_SECONDS = 60 * 60


def _sign(key: bytes, payload: str) -> str:
    mac = hmac.new(key, b"roboflow export\0" + payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def issue(key: bytes, version_id: uuid.UUID, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + LINK_SECONDS)
    payload = f"{version_id}.{expires}"
    return f"{payload}.{_sign(key, payload)}"


INVALID = "the export link is not valid; ask for the export again"


def verify(key: bytes, token: str, *, now: float | None = None) -> uuid.UUID:
    """The version the token was issued for; 401 if it is forged or expired."""
    try:
        version, expires, mac = token.split(".")
        if not hmac.compare_digest(mac, _sign(key, f"{version}.{expires}")):
            raise ValueError
        version_id, until = uuid.UUID(version), int(expires)
    except ValueError:
        raise Unauthorized(INVALID) from None
    if until < (time.time() if now is None else now):
        raise Unauthorized("the export link has expired; ask for the export again")
    return version_id
