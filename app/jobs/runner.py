"""One attempt of a training job, run by a worker on the `gpu` queue: claim the job in the database, run the
shared trainer with callbacks that heartbeat, fence and publish, then register the model. The Celery task
(worker/training.py) is a shell around `run_job`, which tests call directly.

A job survives its worker: the reaper (app/jobs/reaper.py) re-enqueues a job whose lease expired, and the next
attempt resumes from the last checkpoint this one uploaded to object storage.
"""

from __future__ import annotations

import logging
import shutil
import socket
import traceback
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.errors import AppError
from app.core.lease import may_start
from app.core.queue import TaskQueue
from app.core.storage import ObjectStorage, make_storage
from app.jobs import base_models, repository
from app.jobs.base_models import BaseModelInfo
from app.jobs.callbacks import JobCallbacks, LeaseLost
from app.jobs.checkpoints import job_prefix
from app.jobs.feed import make_publisher
from app.jobs.logbuffer import LogBuffer
from app.jobs.service import notify_end, set_status, train_config
from app.jobs.tables import TrainingJob
from app.models.assembly import BaseRef, store_model
from app.models.service import model_prefix, record_regression, register_model
from app.models.serving import ModelCache
from app.models.tables import Model
from app.settings import Settings
from app.versions.snapshots import download_prefix, fetch_snapshot
from app.versions.tables import DatasetVersion
from app.workers.registry import device_count, worker_device
from trainer.launch import launch_with_rank0_here
from trainer.recipe import Cancelled, RunResult, run

logger = logging.getLogger("samtune.worker.training")


def run_job(settings: Settings, job_id: uuid.UUID, tasks: TaskQueue) -> str:
    """One attempt of the job (or nothing, if it is not ours to run); the outcome in a word."""
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
        self.gpus = 1

    def run(self) -> str:
        claimed = self._claim()
        if claimed is not None:
            return claimed
        log_buffer = LogBuffer()
        trainer_log = logging.getLogger("samtune.trainer")
        trainer_log.addHandler(log_buffer)
        trainer_log.setLevel(logging.INFO)
        callbacks = JobCallbacks(self.settings, self.factory, self.storage, self.publisher, self.job_id,
                                 self.token, self.attempt, log_buffer)  # fmt: skip
        try:
            cfg = self._prepare()
            callbacks.start()
            try:
                if self.gpus > 1:
                    # DDP: rank 0 here with the callbacks, the other ranks as child processes (trainer/launch.py).
                    result = launch_with_rank0_here(cfg, self.gpus, lambda: run(cfg, callbacks))
                else:
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
            # Reached when a redelivered message claims a job whose lease expired before the reaper saw it.
            if not may_start(job.attempt, job.max_restarts + 1):
                set_status(session, self.publisher, job, "failed", "gave up: too many restarts")
                job.error = (
                    f"the job was restarted {job.max_restarts} times and its worker was lost each time"
                )
                return "failed"
            note = (
                f"running (attempt {job.attempt}, resuming from step {job.checkpoint_step or 0})"
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
            base, stored = self._base(session, job)
            overrides, mode = dict(job.overrides or {}), job.mode
            last, best = job.checkpoint_prefix, job.best_checkpoint_prefix
            self.gpus = job.gpus or 1
            session.expunge(version)
        devices = device_count(self.settings, worker_device(self.settings))
        if self.gpus > devices:
            # The API refused this against the live workers when the job was made; this worker has fewer.
            raise AppError(
                f"asked for {self.gpus} GPUs; this worker ({socket.gethostname()}) has {devices} "
                "(SAMTUNE_WORKER_DEVICES, or the CUDA devices it sees)"
            )
        data = fetch_snapshot(self.storage, version, self.settings.data_dir / "cache" / "snapshots")
        if stored is not None:
            # A workspace model as the base: its files, fetched (and checked against their sha256) once per
            # machine by the inference tier's own cache; the trainer loads that directory.
            cache = ModelCache(self.storage, self.settings.data_dir / "cache" / "models",
                               self.settings.model_cache_bytes, settings=self.settings)  # fmt: skip
            base.location = str(cache.fetch(*stored))
        # What registration compares a decoder-mode model against, to store only what it changed.
        self.base = BaseRef(name=base.name, location=base.location, model=stored)
        if last:
            # Resume exactly where the last attempt's last uploaded checkpoint left off.
            shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
            download_prefix(self.storage, f"{last}/last", self.run_dir / "checkpoints" / "last")
            if best:
                download_prefix(self.storage, f"{best}/best", self.run_dir / "checkpoints" / "best")
        elif self.run_dir.exists():
            shutil.rmtree(self.run_dir)  # leftovers of an attempt that never checkpointed
        cfg = train_config(base, mode, overrides, data_dir=data, output_dir=self.run_dir)
        return cfg.model_copy(
            update={"progress_bar": False, "cache_dir": self.settings.data_dir / "cache" / "embeddings"}
        )

    def _base(
        self, session: Session, job: TrainingJob
    ) -> tuple[BaseModelInfo, tuple[uuid.UUID, str, str] | None]:
        """The job's base model, and for a workspace model where its files are stored (id, prefix, sha256)."""
        if job.base_model_id is None:
            return base_models.resolve(self.settings, job.base_model), None
        model = session.get(Model, job.base_model_id)
        if model is None:
            raise AppError(
                f"its base model {job.base_model} was deleted after the job was created; "
                "start a new job from another model"
            )
        base = BaseModelInfo(
            name=job.base_model,
            description=job.base_model_description or job.base_model,
            available=True,
            model_id=model.id,
            lineage=list(job.base_lineage or [job.base_model]),
        )
        return base, (model.id, model.checkpoint_prefix, model.checkpoint_sha256)

    def _succeed(self, result: RunResult) -> str:
        assert result.model_dir is not None
        # Uploaded before the transaction that registers it (a large model takes minutes), under a prefix
        # of its own: if the lease turns out lost, the files are deleted and nothing points at them.
        model_id = uuid.uuid4()
        prefix = model_prefix(model_id)
        sha, _ = store_model(self.storage, result.model_dir, prefix, self.base, self.settings)
        with transaction(self.factory) as session:
            job = repository.fenced(session, self.job_id, self.token)
            if job is None:
                self.storage.delete_prefix(prefix)
                return "lease lost"
            model = register_model(
                session, job, model_id, sha, {"best_valid": result.best_valid, "test": result.test}
            )
            job.progress = dict(job.progress or {}) | {"step": result.steps, "eta_seconds": 0}
            how = "stopped by request, best checkpoint kept" if result.status == "stopped" else "finished"
            if model.regression:
                how += "; it scored below its base model, so its version's name keeps the previous model"
                record_regression(session, self.publisher, job, model)
            set_status(session, self.publisher, job, "succeeded", f"succeeded ({how}): model {model_id}",
                       {"model_id": str(model_id), "stopped": result.status == "stopped",
                        "regression": model.regression})  # fmt: skip
            notify_end(session, self.tasks, job)
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
            notify_end(session, self.tasks, job)
        self._cleanup()

    def _cleanup(self) -> None:
        self.storage.delete_prefix(job_prefix(self.job_id))
        shutil.rmtree(self.run_dir, ignore_errors=True)
