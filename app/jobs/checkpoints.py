"""Where an attempt's checkpoints live in object storage. Every attempt writes under a prefix of its own, and
each `last` checkpoint under a prefix of its own, so no upload ever overwrites what the database points at."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.core.storage import ObjectStorage

logger = logging.getLogger("samtune.worker.training")


def job_prefix(job_id: uuid.UUID) -> str:
    """Everything the job's attempts wrote: deleted once the job ends."""
    return f"jobs/{job_id}/"


def attempt_prefix(job_id: uuid.UUID, attempt: int) -> str:
    # One prefix per attempt: a stale attempt's late upload can never overwrite a newer attempt's files.
    return f"jobs/{job_id}/attempt-{attempt}/checkpoints"


# Tests only: seconds to wait before each file of a checkpoint upload, so that a test can kill a worker while
# one is in flight (tests/jobs/test_checkpoint_upload.py). Never set in a deployment.
TEST_ONLY_UPLOAD_DELAY_ENV = "SAMTUNE_TEST_ONLY_CHECKPOINT_UPLOAD_DELAY_SECONDS"


def upload_dir(storage: ObjectStorage, directory: Path, prefix: str, *, delay_per_file: float = 0.0) -> None:
    """Every finished file under `directory` to `prefix` (`.tmp` files are still being written)."""
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.endswith(".tmp"):
            if delay_per_file:
                time.sleep(delay_per_file)
            storage.put_file(f"{prefix}/{path.relative_to(directory).as_posix()}", path)


def snapshot_dir(directory: Path, into: Path) -> Path:
    """A private copy of the finished files of `directory` for the uploader: hard links where the filesystem
    allows (instant, no extra bytes), else copies. The trainer replaces a checkpoint's files by renaming new ones
    over them (`os.replace`), never by rewriting them in place, so a link keeps the bytes it was made from
    while the trainer writes the next checkpoint."""
    into.mkdir(parents=True)
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.endswith(".tmp"):
            dest = into / path.relative_to(directory)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
    return into


@dataclass
class Snapshot:
    kind: str  # "last" or "best"
    step: int
    directory: Path  # the uploader's own copy (snapshot_dir), deleted once uploaded or superseded


class BackgroundUploader:
    """Uploads checkpoints beside training, one at a time. A checkpoint handed in while another uploads waits;
    a newer one of the same kind replaces a waiting one (the latest wins). A waiting `best` goes before a
    waiting `last`, which is never older than it. `upload` runs on the uploader's thread; its first exception
    is kept for `raise_error` to raise on the training thread."""

    def __init__(self, upload: Callable[[Snapshot], None], name: str) -> None:
        self._upload = upload
        self._cond = threading.Condition()
        self._waiting: dict[str, Snapshot] = {}
        self._busy = False
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, snapshot: Snapshot) -> None:
        with self._cond:
            replaced = self._waiting.pop(snapshot.kind, None)
            self._waiting[snapshot.kind] = snapshot
            self._cond.notify_all()
        if replaced is not None:
            shutil.rmtree(replaced.directory, ignore_errors=True)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:
                    return
                snapshot = self._waiting.pop("best" if "best" in self._waiting else "last")
                self._busy = True
            try:
                self._upload(snapshot)
            except Exception as exc:
                logger.exception(
                    "upload of the %s checkpoint at step %s failed", snapshot.kind, snapshot.step
                )
                if self.error is None:
                    self.error = exc
            finally:
                shutil.rmtree(snapshot.directory, ignore_errors=True)
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait(self) -> None:
        """Until nothing waits and nothing uploads."""
        with self._cond:
            while self._waiting or self._busy:
                self._cond.wait()

    def close(self) -> None:
        """Upload what waits, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
