"""Training's Celery tasks: shells around app/jobs/runner.py (one attempt) and app/jobs/reaper.py."""

from __future__ import annotations

import uuid

from celery import shared_task

from app.core.queue import CeleryQueue
from app.core.tasks import REAP_STALE_JOBS, TRAIN_JOB
from app.jobs.reaper import reap_stale_jobs
from app.jobs.runner import run_job


@shared_task(name=TRAIN_JOB, bind=True)
def train_job_task(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    return run_job(self.app.conf.samtune_settings, uuid.UUID(job_id), CeleryQueue(self.app))


@shared_task(name=REAP_STALE_JOBS, bind=True)
def reap_stale_jobs_task(self) -> list[str]:  # type: ignore[no-untyped-def]
    return reap_stale_jobs(self.app.conf.samtune_settings, CeleryQueue(self.app))
