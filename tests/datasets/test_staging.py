"""Beat's housekeeping removes upload staging folders that a killed API process left, and nothing else."""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.datasets.staging import STALE_AFTER_S, purge_stale_uploads
from app.settings import Settings


def test_only_stale_upload_folders_are_removed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    stale, fresh, other = (settings.tmp_dir / n for n in ("upload-old", "upload-new", "not-an-upload"))
    for folder in (stale, fresh, other):
        folder.mkdir()
        (folder / "part.zip").write_bytes(b"x")
    old = time.time() - STALE_AFTER_S - 60
    for folder in (stale, other):
        os.utime(folder, (old, old))

    assert purge_stale_uploads(settings) == 1
    assert not stale.exists() and fresh.exists() and other.exists()
    assert purge_stale_uploads(settings, older_than_s=0) == 1 and not fresh.exists()
