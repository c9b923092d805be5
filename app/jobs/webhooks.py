"""Job webhooks: the signed body a job's end POSTs to the user's URL, one delivery attempt recorded as a
`webhook` event. Retries with backoff are the Celery task's (worker/webhooks.py).

Deliveries follow the Standard Webhooks scheme (https://www.standardwebhooks.com): `webhook-id` (the same for
every attempt at one message, so a receiver can drop duplicates), `webhook-timestamp` (seconds since the epoch)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. The timestamp is inside the signed
content, so a receiver that refuses old timestamps refuses replays. docs/api.md shows how to verify.

The destination is checked (app/jobs/webhook_target.py) and the connection made to the checked address. What is
recorded of a failure is the HTTP status or "no HTTP answer", never the socket's error text: "connection refused"
against "timed out" would tell a caller which ports are open where the worker stands.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx

from app.core.db import make_engine, make_sessionmaker, transaction
from app.jobs import repository, webhook_target
from app.jobs.feed import make_publisher
from app.jobs.service import record
from app.jobs.tables import TrainingJob
from app.settings import Settings

ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"
# The body-only signature of 0.1.0, kept for one release (docs/api.md, "Deprecated fields"): it has no
# timestamp, so a receiver relying on it cannot refuse a replayed delivery.
LEGACY_SIGNATURE_HEADER = "X-Samtune-Signature"


class WebhookRejected(Exception):
    pass


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret. Jobs made before 0.2 hold a plain token, used as its own bytes."""
    if secret.startswith(webhook_target.SECRET_PREFIX):
        return base64.b64decode(secret.removeprefix(webhook_target.SECRET_PREFIX))
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def sign_legacy(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(job: TrainingJob, model_id: uuid.UUID | None) -> dict[str, object]:
    return {
        "event": f"job.{job.status}",
        "job_id": str(job.id),
        "status": job.status,
        "base_model": job.base_model,
        "model_id": str(model_id) if model_id else None,
        "error": job.error,
        "best_valid": (job.progress or {}).get("best_valid"),
        "best_metrics": (job.progress or {}).get("best_valid"),  # deprecated name of best_valid (docs/api.md)
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def _post(target: webhook_target.Target, body: bytes, headers: dict[str, str]) -> httpx.Response:
    # No proxy from the environment (it would connect in our place, to whatever the name resolves to then) and
    # no redirects (a 30x could point anywhere, 127.0.0.1 included).
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=10.0) as client:
        return client.post(
            target.connect_url,
            content=body,
            headers=headers | {"Host": target.host_header},
            extensions={"sni_hostname": target.server_name},
        )


def deliver(
    settings: Settings,
    job_id: uuid.UUID,
    attempt: int,
    *,
    now: float | None = None,
    resolver: webhook_target.Resolver = webhook_target.system_resolver,
) -> int:
    """POST once: the status code on success; WebhookRejected when the task should retry; 0 when there is
    nothing to send or the destination is refused (retrying would not change that)."""
    engine = make_engine(settings.database_url)
    try:
        factory = make_sessionmaker(engine)
        with transaction(factory) as session:
            job = session.get(TrainingJob, job_id)
            if job is None or not job.webhook_url:
                return 0
            body = json.dumps(payload(job, repository.model_for(session, job.id))).encode()
            url, secret = job.webhook_url, job.webhook_secret or ""
            message_id = f"msg_{job.id.hex}_{job.status}"
        timestamp = int(time.time() if now is None else now)
        headers = {
            "Content-Type": "application/json",
            ID_HEADER: message_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, message_id, timestamp, body),
            LEGACY_SIGNATURE_HEADER: sign_legacy(secret, body),
            "X-Samtune-Delivery": f"{job_id}/{attempt}",
        }
        retry, status_code = True, 0
        try:
            target = webhook_target.resolve(url, settings.webhook_allowed_hosts, resolver)
            response = _post(target, body, headers)
            status_code = response.status_code
            ok, outcome = status_code < 300, f"HTTP {status_code}"
        except webhook_target.DestinationRefused:
            ok, retry, outcome = False, False, "not sent: the host " + webhook_target.NOT_PUBLIC
        except webhook_target.HostUnresolved:
            ok, outcome = False, "the host does not resolve"
        except httpx.HTTPError:
            ok, outcome = False, "no HTTP answer"
        with transaction(factory) as session:
            job = session.get(TrainingJob, job_id)
            assert job is not None
            verb = "delivered" if ok else f"delivery attempt {attempt + 1} failed"
            record(session, make_publisher(settings), job, "webhook", f"webhook {verb} ({outcome})",
                   {"delivered": ok, "attempt": attempt + 1})  # fmt: skip
        if not ok and retry:
            raise WebhookRejected(outcome)
        return status_code
    finally:
        engine.dispose()
