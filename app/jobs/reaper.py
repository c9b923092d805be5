"""The jobs reaper, run by beat: a running job whose lease expired lost its worker (killed, out of memory, the
machine gone). It is resumed elsewhere from its last checkpoint, up to `max_restarts` times."""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.queue import TaskQueue, enqueue_after_commit
from app.core.storage import make_storage
from app.core.tasks import TRAIN_JOB
from app.jobs import repository
from app.jobs.checkpoints import job_prefix
from app.jobs.feed import make_publisher
from app.jobs.service import notify_end, set_status
from app.settings import Settings


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
            # Each comes back fenced out (its token cleared, in case the silent attempt is only slow).
            for expired in repository.expired_leases(session, now):
                job = expired.row
                if job.cancel_requested:
                    # Cancelled, and its worker died before it acted on that: there is nothing to resume (a
                    # new attempt would never be claimed, and the job would stay queued for good).
                    set_status(session, publisher, job, "cancelled",
                               "cancelled (its worker was lost before it acted on the cancel); "
                               "its checkpoints are discarded")  # fmt: skip
                    discarded.append(job.id)
                    continue
                if not expired.retry:
                    job.error = (f"its worker stopped responding {job.attempt} times (killed, out of memory, "
                                 f"or the machine was lost); gave up after {job.max_restarts} restarts")  # fmt: skip
                    set_status(
                        session, publisher, job, "failed", f"failed: {job.error}", {"error": job.error}
                    )
                    notify_end(session, tasks, job)
                    continue
                step = job.checkpoint_step or 0
                job.enqueued_at = now
                set_status(session, publisher, job, "queued",
                           f"worker lost during attempt {job.attempt}; queued to resume from step {step}",
                           {"restart": True, "from_step": step})  # fmt: skip
                enqueue_after_commit(session, tasks, TRAIN_JOB, [str(job.id)])
                sent.append(str(job.id))
            older = now - timedelta(seconds=settings.job_requeue_after_seconds)
            for job in repository.forgotten_queued(session, older):
                job.enqueued_at = now
                enqueue_after_commit(session, tasks, TRAIN_JOB, [str(job.id)])
                sent.append(str(job.id))
        if discarded:
            storage = make_storage(settings)
            for job_id in discarded:
                storage.delete_prefix(job_prefix(job_id))
    finally:
        engine.dispose()
    return sent
