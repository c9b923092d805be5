"""The Celery workers' series: each task's run time and outcome, recorded by Celery's signals in the process
that ran it (a pool child), and the clean-up when such a process, or the worker, ends (`--max-tasks-per-child=1`
ends a pool child after every task)."""

from __future__ import annotations

import time
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_process_shutdown, worker_shutdown

from app.metrics.multiprocess import mark_dead
from app.metrics.series import TASK_DURATION, TASKS

_started: dict[str, float] = {}  # task id -> perf_counter at its start, in this process


def _prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    name = getattr(task, "name", None) or "unknown"
    TASKS.labels(name, (state or "unknown").lower()).inc()
    started = _started.pop(task_id, None) if task_id else None
    if started is not None:
        TASK_DURATION.labels(name).observe(time.perf_counter() - started)


def _process_ends(**_: Any) -> None:
    mark_dead()


def connect() -> None:
    """Connect the receivers (once: dispatch_uid); `worker.celery_app` calls it when it is imported."""
    task_prerun.connect(_prerun, weak=False, dispatch_uid="samtune.metrics.prerun")
    task_postrun.connect(_postrun, weak=False, dispatch_uid="samtune.metrics.postrun")
    worker_process_shutdown.connect(_process_ends, weak=False, dispatch_uid="samtune.metrics.process_ends")
    # The worker's main process too: it runs no task, but the series it made at import have files of their own.
    worker_shutdown.connect(_process_ends, weak=False, dispatch_uid="samtune.metrics.worker_ends")
