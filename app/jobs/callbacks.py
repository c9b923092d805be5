"""What the trainer reports through during one attempt (trainer/callbacks.py's protocol): heartbeat, fenced
writes of progress, metric points, log lines and checkpoint pointers, and live events."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.core.db import transaction, utcnow
from app.core.storage import ObjectStorage
from app.jobs import repository
from app.jobs.checkpoints import (
    TEST_ONLY_UPLOAD_DELAY_ENV,
    BackgroundUploader,
    Snapshot,
    attempt_prefix,
    snapshot_dir,
    upload_dir,
)
from app.jobs.feed import Publisher
from app.jobs.logbuffer import LogBuffer
from app.jobs.service import record
from app.settings import Settings
from trainer.callbacks import StopRequest

logger = logging.getLogger("samtune.worker.training")

# A phase before training (decoder mode's image-embedding cache) reports after every image; the live feed gets
# at most one progress snapshot per this many seconds (plus its first and last), and the database at most one
# write per heartbeat period (`metrics_flush_seconds`): 10,000 images never mean 10,000 writes.
PHASE_PUBLISH_SECONDS = 1.0


class LeaseLost(Exception):
    """Another attempt owns the job now (this worker was presumed dead): stop without touching it."""


class JobCallbacks:
    """Heartbeat, fenced writes and live events for one attempt. A background thread renews the lease,
    flushes metrics and log lines in batches, and reads the stop/cancel flags; the training loop only
    touches memory, so a slow database never slows a step."""

    def __init__(
        self, settings: Settings, factory: sessionmaker[Session], storage: ObjectStorage, publisher: Publisher,
        job_id: uuid.UUID, token: str, attempt: int, log_buffer: LogBuffer,
    ) -> None:  # fmt: skip
        self.settings, self.factory, self.storage, self.publisher = settings, factory, storage, publisher
        self.job_id, self.token, self.attempt = job_id, token, attempt
        self.logs = log_buffer
        # Guards the in-memory state both threads touch; never held across a database call, so the training
        # loop never waits on the database.
        self.lock = threading.Lock()
        # Orders the writes of metric points against the checkpoint pointer (heartbeat thread and training
        # thread): the pointer must not move past a step whose points another thread has taken from the
        # buffer but not yet written. (The heartbeat's write of `progress` no longer needs it: the pointer has
        # columns of its own, which that write does not touch.)
        self.write_lock = threading.Lock()
        self.points: list[tuple[int, float, str, float]] = []
        self.progress: dict[str, Any] = {}
        self.phase_published_at = 0.0
        self.phase_unwritten = False  # the phase moved since the database last had `progress`
        self.best: dict[str, float] | None = None
        self.flags: tuple[bool, bool] = (False, False)
        self.lost = False
        self.started = time.monotonic()
        self.start_step = 0
        self.total_steps: int | None = None
        self.checkpoint_prefix: str | None = None  # this attempt's last `last`, deleted when superseded
        self.best_uploaded = False  # this attempt has uploaded a `best` checkpoint
        self.uploader = BackgroundUploader(self._upload, name=f"checkpoint-upload-{job_id}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    # trainer -> here
    def on_setup(self, hyperparameters: dict[str, dict[str, Any]], start_step: int) -> None:
        self.start_step = start_step
        self.total_steps = int(hyperparameters["total_steps"]["value"])
        self.started = time.monotonic()
        with transaction(self.factory) as session:
            job = repository.fenced(session, self.job_id, self.token)
            if job is None:
                raise LeaseLost(f"job {self.job_id}: lease lost before training started")
            job.hyperparameters = hyperparameters
            # When this attempt's training loop began (model loaded, data fetched, caches filled): minus the
            # claim, the worker's setup overhead per attempt (bench/job_queue.py reads it).
            # Training proper begins: any phase before it (caching) is over.
            self.progress = dict(job.progress or {}) | {
                "step": start_step,
                "total_steps": self.total_steps,
                "training_started_at": utcnow().isoformat(),
                "phase": None,
            }
            self.best = self.progress.get("best_valid")
            job.progress = self.progress
            progress = dict(self.progress)
        self.publisher.publish(self.job_id, "progress", progress)

    def on_phase_progress(self, phase: str, done: int, total: int, eta_seconds: float | None) -> None:
        """Memory only, as a step is: the heartbeat thread writes the phase to the row within a period, and
        the live feed gets a snapshot at most once a `PHASE_PUBLISH_SECONDS`, plus the phase's first and
        last."""
        if not self.progress:
            # Before setup this attempt holds no copy of the row's progress (its step, the best validation of
            # an earlier attempt): read it once, or the heartbeat's write of the phase would replace them.
            with transaction(self.factory) as session:
                job = repository.fenced(session, self.job_id, self.token)
                if job is None:
                    self.lost = True
                    return
                row = dict(job.progress or {})
            with self.lock:
                self.progress = row | self.progress
        now = time.monotonic()
        snapshot = {
            "name": phase,
            "done": done,
            "total": total,
            "eta_seconds": round(eta_seconds, 1) if eta_seconds is not None else None,
        }
        with self.lock:
            self.progress = self.progress | {"phase": snapshot}
            self.phase_unwritten = True
            due = done in (0, total) or now - self.phase_published_at >= PHASE_PUBLISH_SECONDS
            if due:
                self.phase_published_at = now
            progress = dict(self.progress)
        if due:
            self.publisher.publish(self.job_id, "progress", progress)

    def on_metrics(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        elapsed = time.monotonic() - self.started
        rate = (step - self.start_step) / elapsed if elapsed > 0 and step > self.start_step else None
        with self.lock:
            self.points += [(step, epoch, name, float(value)) for name, value in metrics.items()]
            if "valid_segm_AP" in metrics:
                valid = {k.removeprefix("valid_"): v for k, v in metrics.items() if k.startswith("valid_")}
                if self.best is None or valid["segm_AP"] > self.best.get("segm_AP", -1.0):
                    self.best = valid
            self.progress = self.progress | {
                "step": step,
                "epoch": round(epoch, 4),
                "steps_per_second": round(rate, 4) if rate else None,
                "eta_seconds": round((self.total_steps - step) / rate, 1)
                if rate and self.total_steps
                else None,
                "best_valid": self.best,
            }
            progress = dict(self.progress)
        self.publisher.publish(self.job_id, "metrics", {"step": step, "epoch": epoch, "metrics": metrics})
        self.publisher.publish(self.job_id, "progress", progress)

    def on_checkpoint(self, step: int, path: Path, is_best: bool) -> None:
        """Hands a snapshot of the checkpoint to the uploader and returns: the upload runs beside training."""
        if path.name not in ("last", "best"):
            return  # the final model directory: registered by the attempt (app/jobs/runner.py)
        self.uploader.raise_error()
        # The trainer renames the next checkpoint's files over these while the upload may still read them: the
        # uploader reads its own links to this checkpoint's bytes.
        snapshot = snapshot_dir(
            path, path.parent / "uploading" / f"{path.name}-{step}-{uuid.uuid4().hex[:8]}"
        )
        self.uploader.submit(Snapshot(path.name, step, snapshot))

    def _upload(self, snapshot: Snapshot) -> None:
        """On the uploader's thread: the files, then (for `last`) the job's pointer, fenced by the lease."""
        if self.lost:
            return
        prefix_of_attempt = attempt_prefix(self.job_id, self.attempt)
        delay = float(os.environ.get(TEST_ONLY_UPLOAD_DELAY_ENV) or 0)
        if snapshot.kind == "best":
            # One file, replaced whole. It may be newer than the `last` the pointer names until that moves.
            upload_dir(self.storage, snapshot.directory, f"{prefix_of_attempt}/best", delay_per_file=delay)
            self.best_uploaded = True
            return
        # Each `last` goes to a prefix of its own: overwriting the one the database points at would leave a
        # mix of two checkpoints (new weights, old trainer state) there if this process died mid-upload.
        prefix = f"{prefix_of_attempt}/step-{snapshot.step}-{uuid.uuid4().hex[:8]}"
        logger.info("uploading the checkpoint at step %s to %s", snapshot.step, prefix)
        upload_dir(self.storage, snapshot.directory, f"{prefix}/last", delay_per_file=delay)
        # The metric points up to this step are in the database before the pointer moves past them: a resume
        # from here never redoes those steps, so a point lost with this process would be a gap for good.
        self.flush()
        # Only now does the database point at it: a resume never reads a half-uploaded checkpoint. The best
        # checkpoint is this attempt's once it uploaded one (a waiting `best` uploads before a `last`);
        # until then the pointer keeps the previous attempt's.
        best = prefix_of_attempt if self.best_uploaded else None
        with self.write_lock, transaction(self.factory) as session:
            moved = repository.move_checkpoint(session, self.job_id, self.token, prefix, snapshot.step, best)
        if not moved:
            self.lost = True
            self.storage.delete_prefix(f"{prefix}/")  # nothing points at it, and nothing ever will
            return
        logger.info("the job points at the checkpoint at step %s", snapshot.step)
        old, self.checkpoint_prefix = self.checkpoint_prefix, prefix
        if old:
            self.storage.delete_prefix(f"{old}/")  # this attempt's previous `last`, no longer pointed at

    def on_event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        with transaction(self.factory) as session:
            job = repository.fenced(session, self.job_id, self.token)
            if job is None:
                self.lost = True
                return
            record(session, self.publisher, job, kind, message, data)

    def should_stop(self) -> StopRequest:
        if self.lost:
            raise LeaseLost(f"job {self.job_id}: another attempt holds the lease now")
        self.uploader.raise_error()  # a checkpoint upload that failed fails the run, as it did inside a step
        stop, cancel = self.flags
        return "cancel" if cancel else "stop" if stop else None

    # the heartbeat thread
    def start(self) -> None:
        self.uploader.start()
        self._thread.start()

    def close(self) -> None:
        # The uploads waiting or in flight finish first: the job's pointer reaches the last checkpoint, and
        # nothing writes under the job's prefix once the attempt has cleaned it up.
        self.uploader.close()
        with self.lock:
            if self.progress.get("phase"):  # the run ended inside a phase (it failed there): not running now
                self.progress = self.progress | {"phase": None}
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()
        # The last progress (final step, best validation so far) goes in now: the heartbeat writes it at most
        # once a period, and a run that ends within a period of its last validation would otherwise leave the
        # job without its best metrics. Called from a `finally`: a failure here must not hide the run's own.
        if not self.lost:
            try:
                self.renew()
            except Exception:
                logger.exception("final progress of job %s not written", self.job_id)

    def _beat(self) -> None:
        period = min(self.settings.job_heartbeat_seconds, self.settings.metrics_flush_seconds)
        last_renew = 0.0
        while not self._stop.wait(period):
            try:
                self.flush()
                # A phase in progress goes to the row every period (renewing the lease on the way), so the
                # job page, reloaded, shows it; otherwise `progress` waits for the lease's own period.
                with self.lock:
                    phase_moved, self.phase_unwritten = self.phase_unwritten, False
                if phase_moved or time.monotonic() - last_renew >= self.settings.job_heartbeat_seconds:
                    self.renew()
                    last_renew = time.monotonic()
            except Exception:  # a database blip must not kill the heartbeat; the lease gives us time
                logger.exception("heartbeat of job %s failed; retrying", self.job_id)

    def renew(self) -> None:
        with self.lock:
            progress = dict(self.progress) if self.progress else None
        with transaction(self.factory) as session:
            flags = repository.renew(
                session, self.job_id, self.token, utcnow(),
                timedelta(seconds=self.settings.job_lease_seconds), progress,
            )  # fmt: skip
        if flags is None:
            self.lost = True
        else:
            self.flags = flags

    def flush(self) -> None:
        """Write the buffered metric points and log lines, only while the lease is ours."""
        with self.write_lock:
            with self.lock:
                points, self.points = self.points, []
            lines = self.logs.take()
            if not points and not lines:
                return
            try:
                with transaction(self.factory) as session:
                    job = repository.fenced(session, self.job_id, self.token)
                    if job is None:
                        self.lost = True
                        return
                    for start in range(0, len(points), 1000):
                        repository.upsert_metrics(session, self.job_id, points[start : start + 1000])
                    for line in lines:
                        repository.add_event(session, self.job_id, repository.LOG, line, attempt=self.attempt)
            except Exception:
                # Not written (a database blip): back into the buffers for the next flush, not lost.
                with self.lock:
                    self.points[:0] = points
                self.logs.put_back(lines)
                raise
