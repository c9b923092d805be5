"""Periodic housekeeping run by beat on the cpu queue."""

from __future__ import annotations

import shutil
import time

from celery import shared_task

from app.core.tasks import PURGE_STALE_UPLOADS
from app.settings import Settings

STALE_AFTER_S = 24 * 3600


def purge_stale_uploads_in(settings: Settings, *, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove upload staging folders that a killed API process left behind."""
    cutoff = time.time() - older_than_s
    removed = 0
    for path in settings.tmp_dir.glob("upload-*"):
        if path.is_dir() and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


@shared_task(name=PURGE_STALE_UPLOADS, bind=True)
def purge_stale_uploads(self) -> int:  # type: ignore[no-untyped-def]
    return purge_stale_uploads_in(self.app.conf.samtune_settings)
