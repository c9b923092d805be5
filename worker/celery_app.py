"""The Celery application. Built from explicit settings; the module-level `app` exists only so that
`celery -A worker.celery_app` finds it, and reads the environment once when the worker starts."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

import app.tables  # noqa: F401  (every table mapped before a task touches one: foreign keys resolve)
from app.core.logging import install_redaction
from app.settings import Settings

# Queues: `cpu` for dataset work (version builds, housekeeping), `gpu` for training (one process per GPU).
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"


def make_celery(settings: Settings) -> Celery:
    celery = Celery(
        "samtune",
        include=[
            "worker.housekeeping",
            "worker.versions",
            "worker.training",
            "worker.webhooks",
            "worker.predictions",
        ],
    )
    conf: dict[str, object] = {
        "broker_url": settings.broker_url,
        "task_default_queue": CPU_QUEUE,
        # State lives in the database; Celery results would be a second, weaker copy.
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "beat_schedule": {
            "purge-stale-uploads": {"task": "samtune.purge_stale_uploads", "schedule": 3600.0},
            "reap-stale-builds": {"task": "samtune.reap_stale_builds", "schedule": 60.0},
            "reap-stale-jobs": {
                "task": "samtune.reap_stale_jobs",
                "schedule": settings.reaper_interval_seconds,
            },
        },
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
    }
    if settings.broker_url.startswith("filesystem://"):
        # The embedded default: messages are files under DATA_DIR, no broker server to run.
        folder = str(settings.broker_dir)
        conf["broker_transport_options"] = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            # Every process of an installation must see the same bindings, whatever directory it started in.
            "control_folder": str(settings.broker_control_dir),
            "store_processed": False,
        }
    else:
        # Redis re-delivers a message no worker acknowledged within this window; training jobs are
        # long, and the database claim makes a second delivery harmless.
        conf["broker_transport_options"] = {"visibility_timeout": 3600}
    celery.conf.update(conf)
    celery.conf.samtune_settings = settings
    return celery


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_celerys_handlers(**_: Any) -> None:
    # Sent only when Celery configured logging itself (`celery -A worker.celery_app worker`); `samtune worker`
    # and `samtune beat` install samtune's configuration instead (app/cli.py), redacting already.
    install_redaction()


app = make_celery(Settings())
