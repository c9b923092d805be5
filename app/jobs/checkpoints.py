"""Where an attempt's checkpoints live in object storage. Every attempt writes under a prefix of its own, and
each `last` checkpoint under a prefix of its own, so no upload ever overwrites what the database points at."""

from __future__ import annotations

import uuid
from pathlib import Path

from app.core.storage import ObjectStorage


def job_prefix(job_id: uuid.UUID) -> str:
    """Everything the job's attempts wrote: deleted once the job ends."""
    return f"jobs/{job_id}/"


def attempt_prefix(job_id: uuid.UUID, attempt: int) -> str:
    # One prefix per attempt: a stale attempt's late upload can never overwrite a newer attempt's files.
    return f"jobs/{job_id}/attempt-{attempt}/checkpoints"


def upload_dir(storage: ObjectStorage, directory: Path, prefix: str) -> None:
    """Every finished file under `directory` to `prefix` (`.tmp` files are still being written)."""
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.endswith(".tmp"):
            storage.put_file(f"{prefix}/{path.relative_to(directory).as_posix()}", path)
