"""The background tasks' names, their queues, and the Celery factory: the one place the API (which sends)
and the worker (which runs) both read them from.

Nothing here builds anything at import time: `make_celery(settings)` is called by whoever has settings (the
API's `create_app`, the worker's `worker.celery_app`)."""

from __future__ import annotations

from celery import Celery

from app.settings import Settings

# Queues: `cpu` for dataset work, housekeeping and webhooks; `gpu` for what loads a model (one process per GPU).
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"

# Task names are part of the wire format: messages already waiting in a deployment's broker carry them, so
# a name, once released, never changes.
BUILD_VERSION = "samtune.build_version"
TRAIN_JOB = "samtune.train_job"
PREDICT_VERSION = "samtune.predict_version"
SEND_WEBHOOK = "samtune.send_webhook"
REAP_STALE_BUILDS = "samtune.reap_stale_builds"
REAP_STALE_JOBS = "samtune.reap_stale_jobs"
REAP_STALE_PREDICTIONS = "samtune.reap_stale_predictions"
PURGE_STALE_UPLOADS = "samtune.purge_stale_uploads"

# Which queue each task goes to. Beat's periodic tasks go to the default queue (`cpu`).
ROUTES: dict[str, str] = {
    BUILD_VERSION: CPU_QUEUE,
    TRAIN_JOB: GPU_QUEUE,
    PREDICT_VERSION: GPU_QUEUE,
    SEND_WEBHOOK: CPU_QUEUE,
    REAP_STALE_BUILDS: CPU_QUEUE,
    REAP_STALE_JOBS: CPU_QUEUE,
    REAP_STALE_PREDICTIONS: CPU_QUEUE,
    PURGE_STALE_UPLOADS: CPU_QUEUE,
}

# The modules whose @shared_task functions a worker registers: thin shells around app/ functions.
TASK_MODULES = (
    "worker.housekeeping",
    "worker.versions",
    "worker.training",
    "worker.webhooks",
    "worker.predictions",
)

# The longest beat sleeps between two looks at its schedule (Celery's default is 5 minutes): its liveness probe
# fails after twice this without a tick.
BEAT_MAX_SLEEP_S = 60
# How often beat runs the build reaper: a build beats about once a second, its lease is two minutes.
BUILD_REAPER_INTERVAL_S = 60.0
UPLOAD_PURGE_INTERVAL_S = 3600.0


def queue_for(task: str) -> str:
    return ROUTES[task]


def make_celery(settings: Settings) -> Celery:
    """A Celery app for these settings; the tasks read `conf.samtune_settings`, never the environment."""
    celery = Celery("samtune", include=list(TASK_MODULES))
    conf: dict[str, object] = {
        "broker_url": settings.broker_url,
        "task_default_queue": CPU_QUEUE,
        "task_routes": {task: {"queue": queue} for task, queue in ROUTES.items()},
        # State lives in the database; Celery results would be a second, weaker copy.
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "beat_schedule": {
            "purge-stale-uploads": {"task": PURGE_STALE_UPLOADS, "schedule": UPLOAD_PURGE_INTERVAL_S},
            "reap-stale-builds": {"task": REAP_STALE_BUILDS, "schedule": BUILD_REAPER_INTERVAL_S},
            "reap-stale-jobs": {"task": REAP_STALE_JOBS, "schedule": settings.reaper_interval_seconds},
            "reap-stale-predictions": {
                "task": REAP_STALE_PREDICTIONS,
                "schedule": settings.reaper_interval_seconds,
            },
        },
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
        # Beat answers `celery inspect ping -d celerybeat@HOST` (docker-compose.yml's probe) while its loop
        # ticks, and stops answering once a tick is twice the longest sleep overdue (Celery's own rule): a
        # hung beat turns unhealthy instead of looking alive while no reaper runs.
        "beat_enable_remote_control": True,
        "beat_max_loop_interval": BEAT_MAX_SLEEP_S,
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
