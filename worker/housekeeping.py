"""Periodic housekeeping run by beat on the cpu queue."""

from __future__ import annotations

from celery import shared_task

from app.core.tasks import PURGE_STALE_UPLOADS
from app.datasets.staging import purge_stale_uploads as purge


@shared_task(name=PURGE_STALE_UPLOADS, bind=True)
def purge_stale_uploads(self) -> int:  # type: ignore[no-untyped-def]
    return purge(self.app.conf.samtune_settings)
