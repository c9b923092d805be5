"""The worker's Celery application, for `celery -A worker.celery_app` (which `samtune worker` and `samtune beat`
run). The factory, task names and queues live in app/core/tasks.py.

Celery's command line needs a module attribute; `app` is built on first access (PEP 562 `__getattr__`) from
the environment's Settings, so importing this module reads no settings and opens no connection."""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from app import tables as _every_table  # noqa: F401  (all mapped before a task runs: foreign keys resolve)
from app.core.logging import install_redaction
from app.core.tasks import make_celery
from app.metrics import tasks as task_metrics
from app.settings import Settings


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_celerys_handlers(**_: Any) -> None:
    # Sent only when Celery configured logging itself (`celery -A worker.celery_app worker`); `samtune worker`
    # and `samtune beat` install samtune's configuration instead (app/cli.py), redacting already.
    install_redaction()


task_metrics.connect()


@cache
def _build() -> Celery:
    return make_celery(Settings())


def __getattr__(name: str) -> Celery:
    # `app` is what Celery's find_app looks up first; `celery` is its second guess.
    if name in ("app", "celery"):
        return _build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
