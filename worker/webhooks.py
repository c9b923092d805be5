"""The webhook task: one delivery per run (app/jobs/webhooks.py), retried with exponential backoff."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task

from app.core.tasks import SEND_WEBHOOK
from app.jobs.webhooks import WebhookRejected, deliver
from app.settings import Settings

logger = logging.getLogger("samtune.worker.webhooks")


@shared_task(name=SEND_WEBHOOK, bind=True, max_retries=None)
def send_webhook_task(self, job_id: str) -> int:  # type: ignore[no-untyped-def]
    settings: Settings = self.app.conf.samtune_settings
    try:
        return deliver(settings, uuid.UUID(job_id), self.request.retries)
    except WebhookRejected as exc:
        if self.request.retries >= settings.webhook_max_retries:
            logger.warning("webhook for job %s given up: %s", job_id, exc)
            return 0
        # 2, 4, 8 ... seconds, at most 10 minutes apart
        raise self.retry(countdown=min(2 ** (self.request.retries + 1), 600)) from exc
