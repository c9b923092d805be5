"""A ready version's snapshot on a worker's local disk, for whatever reads it there (training, batch
prediction). Snapshots never change once ready, so each machine downloads one at most once."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from app.core.storage import ObjectStorage
from app.versions.tables import DatasetVersion


def download_prefix(storage: ObjectStorage, prefix: str, directory: Path) -> int:
    """Every object under `prefix` into `directory`, keeping the key's path below the prefix."""
    count = 0
    for key in storage.list(prefix):
        target = directory / key[len(prefix) :].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.download(key, target)
        count += 1
    return count


def fetch_snapshot(storage: ObjectStorage, version: DatasetVersion, cache: Path) -> Path:
    """The version's snapshot on local disk, downloaded once per machine (snapshots never change)."""
    from trainer.data import SNAPSHOT_IDENTITY  # here, not at the top: it imports torch, which the API avoids

    assert version.snapshot_prefix and version.content_hash
    target = cache / version.content_hash
    identity = json.dumps({"content_hash": version.content_hash}) + "\n"
    if (target / ".complete").exists():
        if not (target / SNAPSHOT_IDENTITY).exists():  # downloaded before snapshots carried it
            (target / SNAPSHOT_IDENTITY).write_text(identity)
        return target
    # Downloaded beside the target and renamed into place: a reader never sees half a snapshot.
    tmp = cache / f".{version.content_hash}.{uuid.uuid4().hex}"
    download_prefix(storage, version.snapshot_prefix, tmp)
    (tmp / SNAPSHOT_IDENTITY).write_text(identity)
    (tmp / ".complete").touch()
    try:
        tmp.rename(target)
    except OSError:  # another worker on this machine finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
