"""Upload staging folders (`upload-*` under the tmp dir, made per upload by service.py): the ones an API
process killed mid-upload left behind are removed by beat's housekeeping task."""

from __future__ import annotations

import shutil
import time

from app.settings import Settings

STALE_AFTER_S = 24 * 3600


def purge_stale_uploads(settings: Settings, *, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove staging folders older than `older_than_s`; returns how many."""
    cutoff = time.time() - older_than_s
    removed = 0
    for path in settings.tmp_dir.glob("upload-*"):
        if path.is_dir() and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
