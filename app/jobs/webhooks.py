"""Job webhooks: the signed body a job's end POSTs to the user's URL, one delivery attempt recorded as a
`webhook` event. Retries with backoff are the Celery task's (worker/webhooks.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import httpx

from app.core.db import make_engine, make_sessionmaker, transaction
from app.jobs import repository
from app.jobs.feed import make_publisher
from app.jobs.service import record
from app.jobs.tables import TrainingJob
from app.settings import Settings

SIGNATURE_HEADER = "X-Samtune-Signature"


class WebhookRejected(Exception):
    pass


def sign(secret: str, body: bytes) -> str:
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


def deliver(settings: Settings, job_id: uuid.UUID, attempt: int) -> int:
    """POST once; the status code on success, WebhookRejected/httpx errors otherwise (the task retries)."""
    engine = make_engine(settings.database_url)
    try:
        factory = make_sessionmaker(engine)
        with transaction(factory) as session:
            job = session.get(TrainingJob, job_id)
            if job is None or not job.webhook_url:
                return 0
            body = json.dumps(payload(job, repository.model_for(session, job.id))).encode()
            url, secret = job.webhook_url, job.webhook_secret or ""
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            "X-Samtune-Delivery": f"{job_id}/{attempt}",
        }
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=10.0)
            ok = response.status_code < 300
            outcome = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, outcome = False, f"{type(exc).__name__}: {exc}"
        with transaction(factory) as session:
            job = session.get(TrainingJob, job_id)
            assert job is not None
            verb = "delivered" if ok else f"delivery attempt {attempt + 1} failed"
            record(session, make_publisher(settings), job, "webhook", f"webhook {verb} ({outcome})",
                   {"delivered": ok, "attempt": attempt + 1})  # fmt: skip
        if not ok:
            raise WebhookRejected(f"{url}: {outcome}")
        return response.status_code
    finally:
        engine.dispose()
