"""Training jobs on the `gpu` queue: claim the job in the database, run the shared trainer with callbacks
that heartbeat, fence and publish, then register the model. Paperless-style: the task is a thin shell
around `run_job`, which tests call directly.

A job survives its worker: the reaper (beat) re-enqueues a job whose lease expired, and the next attempt
resumes from the last checkpoint this one uploaded to object storage.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import shared_task
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.errors import AppError
from app.core.logging import RedactSecrets
from app.core.queue import CeleryQueue, TaskQueue, enqueue_after_commit
from app.core.storage import ObjectStorage, file_sha256, make_storage
from app.datasets.tables import Dataset
from app.jobs import base_models, repository
from app.jobs.feed import Publisher, make_publisher
from app.jobs.schemas import TERMINAL
from app.jobs.service import GPU_QUEUE, TRAIN_TASK, record, set_status, train_config
from app.jobs.tables import TrainingJob
from app.models.tables import Model
from app.settings import Settings
from app.versions.service import CPU_QUEUE
from app.versions.tables import DatasetVersion
from trainer.callbacks import StopRequest
from trainer.recipe import Cancelled, RunResult, run

logger = logging.getLogger("samtune.worker.training")

WEBHOOK_TASK = "samtune.send_webhook"


class LeaseLost(Exception):
    """Another attempt owns the job now (this worker was presumed dead): stop without touching it."""


# --- storage layout --------------------------------------------------------------------------------------


def checkpoint_prefix(job_id: uuid.UUID, attempt: int) -> str:
    # One prefix per attempt: a stale attempt's late upload can never overwrite a newer attempt's files.
    return f"jobs/{job_id}/attempt-{attempt}/checkpoints"


def model_prefix(model_id: uuid.UUID) -> str:
    return f"models/{model_id}"


def _upload_dir(storage: ObjectStorage, directory: Path, prefix: str) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.endswith(".tmp"):
            storage.put_file(f"{prefix}/{path.relative_to(directory).as_posix()}", path)


def _download_prefix(storage: ObjectStorage, prefix: str, directory: Path) -> int:
    count = 0
    for key in storage.list(prefix):
        target = directory / key[len(prefix) :].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.download(key, target)
        count += 1
    return count


def fetch_snapshot(storage: ObjectStorage, version: DatasetVersion, cache: Path) -> Path:
    """The version's snapshot on local disk, downloaded once per machine (snapshots never change)."""
    assert version.snapshot_prefix and version.content_hash
    target = cache / version.content_hash
    if (target / ".complete").exists():
        return target
    tmp = cache / f".{version.content_hash}.{uuid.uuid4().hex}"
    _download_prefix(storage, version.snapshot_prefix, tmp)
    (tmp / ".complete").touch()
    try:
        tmp.rename(target)
    except OSError:  # another worker on this machine finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- the callbacks the trainer reports through ------------------------------------------------------------


class _LogBuffer(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []
        self._lines_lock = threading.Lock()  # not `self.lock`: logging.Handler holds that one around emit()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        # These lines are stored and served by the API (GET /jobs/{id}/logs): redacted like every log output.
        self.addFilter(RedactSecrets())

    def emit(self, record: logging.LogRecord) -> None:
        with self._lines_lock:
            self.lines.append(self.format(record))

    def take(self) -> list[str]:
        with self._lines_lock:
            lines, self.lines = self.lines, []
        return lines

    def put_back(self, lines: list[str]) -> None:
        with self._lines_lock:
            self.lines[:0] = lines


class JobCallbacks:
    """Heartbeat, fenced writes and live events for one attempt. A background thread renews the lease,
    flushes metrics and log lines in batches, and reads the stop/cancel flags; the training loop only
    touches memory, so a slow database never slows a step."""

    def __init__(
        self, settings: Settings, factory: sessionmaker[Session], storage: ObjectStorage, publisher: Publisher,
        job_id: uuid.UUID, token: str, attempt: int, log_buffer: _LogBuffer,
    ) -> None:  # fmt: skip
        self.settings, self.factory, self.storage, self.publisher = settings, factory, storage, publisher
        self.job_id, self.token, self.attempt = job_id, token, attempt
        self.logs = log_buffer
        self.lock = threading.Lock()
        # Serialises this attempt's database writes of progress and metric points (heartbeat thread and
        # training thread): a heartbeat must not write back a progress snapshot taken before a checkpoint
        # pointer moved, and a pointer must not move before the metric points up to its step are written.
        self.write_lock = threading.Lock()
        self.points: list[tuple[int, float, str, float]] = []
        self.progress: dict[str, Any] = {}
        self.best: dict[str, float] | None = None
        self.flags: tuple[bool, bool] = (False, False)
        self.lost = False
        self.started = time.monotonic()
        self.start_step = 0
        self.total_steps: int | None = None
        self.checkpoint: dict[str, Any] | None = None
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
            self.progress = dict(job.progress or {}) | {
                "step": start_step,
                "total_steps": self.total_steps,
                "training_started_at": utcnow().isoformat(),
            }
            self.best = self.progress.get("best_valid")
            job.progress = self.progress

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
        if path.name not in ("last", "best"):
            return  # the final model directory: registered by run_job
        attempt_prefix = checkpoint_prefix(self.job_id, self.attempt)
        if path.name == "best":
            _upload_dir(self.storage, path, f"{attempt_prefix}/best")  # one file, replaced whole
            return
        # Each `last` goes to a prefix of its own: overwriting the one the database points at would leave a
        # mix of two checkpoints (new weights, old trainer state) there if this process died mid-upload.
        prefix = f"{attempt_prefix}/step-{step}-{uuid.uuid4().hex[:8]}"
        _upload_dir(self.storage, path, f"{prefix}/last")
        # The metric points up to this step are in the database before the pointer moves past them: a resume
        # from here never redoes those steps, so a point lost with this process would be a gap for good.
        self.flush()
        # Only now does the database point at it: a resume never reads a half-uploaded checkpoint.
        with self.write_lock, transaction(self.factory) as session:
            job = repository.fenced(session, self.job_id, self.token)
            if job is None:
                self.lost = True
                return
            previous = dict((job.progress or {}).get("checkpoint") or {})
            pointer = previous | {"prefix": prefix, "step": step}
            if (path.parent / "best" / "model.safetensors").exists():
                pointer["best_prefix"] = attempt_prefix
            with self.lock:
                self.checkpoint = pointer
                self.progress = self.progress | {"checkpoint": pointer}
            job.progress = dict(self.progress)
        old = previous.get("prefix")
        if old and old != prefix and old.startswith(f"{attempt_prefix}/"):
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
        stop, cancel = self.flags
        return "cancel" if cancel else "stop" if stop else None

    # the heartbeat thread
    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()

    def _beat(self) -> None:
        period = min(self.settings.job_heartbeat_seconds, self.settings.metrics_flush_seconds)
        last_renew = 0.0
        while not self._stop.wait(period):
            try:
                self.flush()
                if time.monotonic() - last_renew >= self.settings.job_heartbeat_seconds:
                    self.renew()
                    last_renew = time.monotonic()
            except Exception:  # a database blip must not kill the heartbeat; the lease gives us time
                logger.exception("heartbeat of job %s failed; retrying", self.job_id)

    def renew(self) -> None:
        with self.write_lock:
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


# --- one attempt ------------------------------------------------------------------------------------------


def run_job(settings: Settings, job_id: uuid.UUID, tasks: TaskQueue) -> str:
    engine = make_engine(settings.database_url)
    try:
        return _Attempt(settings, make_sessionmaker(engine), make_storage(settings), tasks, job_id).run()
    finally:
        engine.dispose()


class _Attempt:
    def __init__(
        self, settings: Settings, factory: sessionmaker[Session], storage: ObjectStorage, tasks: TaskQueue,
        job_id: uuid.UUID,
    ) -> None:  # fmt: skip
        self.settings, self.factory, self.storage, self.tasks = settings, factory, storage, tasks
        self.job_id = job_id
        self.publisher = make_publisher(settings)
        self.token = uuid.uuid4().hex
        self.run_dir = settings.data_dir / "runs" / str(job_id)

    def run(self) -> str:
        claimed = self._claim()
        if claimed is not None:
            return claimed
        log_buffer = _LogBuffer()
        trainer_log = logging.getLogger("samtune.trainer")
        trainer_log.addHandler(log_buffer)
        trainer_log.setLevel(logging.INFO)
        callbacks = JobCallbacks(self.settings, self.factory, self.storage, self.publisher, self.job_id,
                                 self.token, self.attempt, log_buffer)  # fmt: skip
        try:
            cfg = self._prepare()
            callbacks.start()
            try:
                result = run(cfg, callbacks)
            finally:
                callbacks.close()
        except LeaseLost as exc:
            logger.warning("%s", exc)
            return "lease lost"
        except Cancelled:
            self._finish("cancelled", "cancelled while running; its checkpoints are discarded")
            return "cancelled"
        except Exception as exc:  # a genuine error fails the job once, readably; it is not retried
            logger.exception("job %s failed", self.job_id)
            message = exc.detail if isinstance(exc, AppError) else f"{type(exc).__name__}: {exc}"
            self._finish("failed", f"failed: {message}", error=message, trace=traceback.format_exc(limit=8))
            return "failed"
        finally:
            trainer_log.removeHandler(log_buffer)
        return self._succeed(result)

    def _claim(self) -> str | None:
        """None when this attempt owns the job; else why it does nothing (a duplicate delivery, say)."""
        with transaction(self.factory) as session:
            lease = timedelta(seconds=self.settings.job_lease_seconds)
            if not repository.claim(session, self.job_id, self.token, utcnow(), lease):
                job = session.get(TrainingJob, self.job_id)
                state = job.status if job else "missing"
                logger.info("job %s not claimed: it is %s", self.job_id, state)
                return f"not claimed ({state})"
            job = session.get(TrainingJob, self.job_id)
            assert job is not None
            session.refresh(job)
            self.attempt = job.attempt
            if job.attempt > job.max_restarts + 1:
                set_status(session, self.publisher, job, "failed", "gave up: too many restarts")
                job.error = (
                    f"the job was restarted {job.max_restarts} times and its worker was lost each time"
                )
                return "failed"
            note = (
                f"running (attempt {job.attempt}, resuming from step {(job.progress or {}).get('checkpoint', {}).get('step', 0)})"
                if job.attempt > 1
                else "running"
            )
            set_status(session, self.publisher, job, "running", note, {"attempt": job.attempt})
        return None

    def _prepare(self) -> Any:
        with transaction(self.factory) as session:
            job = session.get(TrainingJob, self.job_id)
            version = session.get(DatasetVersion, job.version_id) if job else None
            assert job is not None and version is not None
            base = base_models.resolve(self.settings, job.base_model)
            overrides, mode = dict(job.overrides or {}), job.mode
            pointer = (job.progress or {}).get("checkpoint")
            session.expunge(version)
        data = fetch_snapshot(self.storage, version, self.settings.data_dir / "cache" / "snapshots")
        if pointer:
            # Resume exactly where the last attempt's last uploaded checkpoint left off.
            shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
            _download_prefix(self.storage, f"{pointer['prefix']}/last", self.run_dir / "checkpoints" / "last")
            if pointer.get("best_prefix"):
                _download_prefix(
                    self.storage, f"{pointer['best_prefix']}/best", self.run_dir / "checkpoints" / "best"
                )
        elif self.run_dir.exists():
            shutil.rmtree(self.run_dir)  # leftovers of an attempt that never checkpointed
        cfg = train_config(
            base.location or base.name, mode, overrides, data_dir=data, output_dir=self.run_dir
        )
        return cfg.model_copy(
            update={"progress_bar": False, "cache_dir": self.settings.data_dir / "cache" / "embeddings"}
        )

    def _succeed(self, result: RunResult) -> str:
        assert result.model_dir is not None
        model_id = uuid.uuid4()
        prefix = model_prefix(model_id)
        _upload_dir(self.storage, result.model_dir, prefix)
        sha = file_sha256(result.model_dir / "model.safetensors")
        with transaction(self.factory) as session:
            job = repository.fenced(session, self.job_id, self.token)
            if job is None:
                self.storage.delete_prefix(prefix)
                return "lease lost"
            version = session.get(DatasetVersion, job.version_id)
            assert version is not None
            dataset = session.get(Dataset, version.dataset_id)
            assert dataset is not None
            session.add(
                Model(
                    id=model_id,
                    workspace_id=job.workspace_id,
                    job_id=job.id,
                    name=f"{dataset.slug}/{version.number}",
                    checkpoint_key=prefix,
                    checkpoint_sha256=sha,
                    eval_results={
                        "base": result.base_test,
                        "fine_tuned": result.test,
                        "valid_best": result.best_valid,
                    },
                )
            )
            job.progress = dict(job.progress or {}) | {"step": result.steps, "eta_seconds": 0}
            how = "stopped by request, best checkpoint kept" if result.status == "stopped" else "finished"
            set_status(session, self.publisher, job, "succeeded", f"succeeded ({how}): model {model_id}",
                       {"model_id": str(model_id), "stopped": result.status == "stopped"})  # fmt: skip
            self._after_end(session, job)
        self._cleanup()
        return "succeeded"

    def _finish(
        self, status: str, message: str, *, error: str | None = None, trace: str | None = None
    ) -> None:
        with transaction(self.factory) as session:
            job = repository.fenced(session, self.job_id, self.token)
            if job is None:
                return
            job.error = error
            if trace:
                repository.add_event(session, job.id, repository.LOG, trace, attempt=job.attempt)
            set_status(session, self.publisher, job, status, message, {"error": error} if error else None)
            self._after_end(session, job)
        self._cleanup()

    def _after_end(self, session: Session, job: TrainingJob) -> None:
        if job.webhook_url and job.status in TERMINAL and job.status != "cancelled":
            enqueue_after_commit(session, self.tasks, WEBHOOK_TASK, [str(job.id)], CPU_QUEUE)

    def _cleanup(self) -> None:
        self.storage.delete_prefix(f"jobs/{self.job_id}/")
        shutil.rmtree(self.run_dir, ignore_errors=True)


@shared_task(name=TRAIN_TASK, bind=True)
def train_job_task(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    return run_job(self.app.conf.samtune_settings, uuid.UUID(job_id), CeleryQueue(self.app))


# --- the reaper --------------------------------------------------------------------------------------------


def reap_stale_jobs(settings: Settings, tasks: TaskQueue) -> list[str]:
    """Resume jobs whose worker went silent (lease expired) from their last checkpoint, up to max_restarts;
    re-send jobs that sat queued so long that their message must be lost."""
    engine = make_engine(settings.database_url)
    publisher = make_publisher(settings)
    sent: list[str] = []
    discarded: list[uuid.UUID] = []
    try:
        factory = make_sessionmaker(engine)
        now = utcnow()
        with transaction(factory) as session:
            for job in repository.expired_leases(session, now):
                job.lease_token = None  # fences the silent attempt out, in case it is only slow
                if job.cancel_requested:
                    # Cancelled, and its worker died before it acted on that: there is nothing to resume (a
                    # new attempt would never be claimed, and the job would stay queued for good).
                    set_status(session, publisher, job, "cancelled",
                               "cancelled (its worker was lost before it acted on the cancel); "
                               "its checkpoints are discarded")  # fmt: skip
                    discarded.append(job.id)
                    continue
                if job.attempt >= job.max_restarts + 1:
                    job.error = (f"its worker stopped responding {job.attempt} times (killed, out of memory, "
                                 f"or the machine was lost); gave up after {job.max_restarts} restarts")  # fmt: skip
                    set_status(
                        session, publisher, job, "failed", f"failed: {job.error}", {"error": job.error}
                    )
                    if job.webhook_url:
                        enqueue_after_commit(session, tasks, WEBHOOK_TASK, [str(job.id)], CPU_QUEUE)
                    continue
                step = (job.progress or {}).get("checkpoint", {}).get("step", 0)
                job.enqueued_at = now
                set_status(session, publisher, job, "queued",
                           f"worker lost during attempt {job.attempt}; queued to resume from step {step}",
                           {"restart": True, "from_step": step})  # fmt: skip
                enqueue_after_commit(session, tasks, TRAIN_TASK, [str(job.id)], GPU_QUEUE)
                sent.append(str(job.id))
            older = now - timedelta(seconds=settings.job_requeue_after_seconds)
            for job in repository.forgotten_queued(session, older):
                job.enqueued_at = now
                enqueue_after_commit(session, tasks, TRAIN_TASK, [str(job.id)], GPU_QUEUE)
                sent.append(str(job.id))
        if discarded:
            storage = make_storage(settings)
            for job_id in discarded:
                storage.delete_prefix(f"jobs/{job_id}/")
    finally:
        engine.dispose()
    return sent


@shared_task(name="samtune.reap_stale_jobs", bind=True)
def reap_stale_jobs_task(self) -> list[str]:  # type: ignore[no-untyped-def]
    return reap_stale_jobs(self.app.conf.samtune_settings, CeleryQueue(self.app))
