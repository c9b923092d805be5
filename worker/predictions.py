"""Batch prediction's Celery tasks: shells around app/models/batches.py."""

from __future__ import annotations

import uuid

from celery import shared_task

from app.core.queue import CeleryQueue
from app.core.tasks import PREDICT_VERSION, REAP_STALE_PREDICTIONS
from app.models.batches import reap_stale_batches, run_batch


@shared_task(name=PREDICT_VERSION, bind=True)
def predict_version_task(self, batch_id: str) -> str:  # type: ignore[no-untyped-def]
    return run_batch(self.app.conf.samtune_settings, uuid.UUID(batch_id))


@shared_task(name=REAP_STALE_PREDICTIONS, bind=True)
def reap_stale_predictions_task(self) -> list[str]:  # type: ignore[no-untyped-def]
    return reap_stale_batches(self.app.conf.samtune_settings, CeleryQueue(self.app))
