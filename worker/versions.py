"""Version builds and the reaper that restarts builds whose worker died."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import shared_task

from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.queue import CeleryQueue, TaskQueue
from app.core.storage import make_storage
from app.settings import Settings
from app.versions import repository
from app.versions.builder import build_version
from app.versions.service import BUILD_TASK, CPU_QUEUE

logger = logging.getLogger("samtune.worker")

# A build beats about once a second while it works; two minutes of silence mean its worker is gone.
STALE_AFTER = timedelta(minutes=2)
MAX_ATTEMPTS = 3


@shared_task(name=BUILD_TASK, bind=True)
def build_version_task(self, version_id: str) -> str:  # type: ignore[no-untyped-def]
    settings: Settings = self.app.conf.samtune_settings
    engine = make_engine(settings.database_url)
    try:
        return build_version(
            make_sessionmaker(engine), make_storage(settings), settings, uuid.UUID(version_id)
        )
    finally:
        engine.dispose()


def reap_stale_builds(
    settings: Settings, tasks: TaskQueue, *, stale_after: timedelta = STALE_AFTER
) -> list[str]:
    """Re-enqueue builds whose heartbeat stopped; fail those that already had MAX_ATTEMPTS tries."""
    engine = make_engine(settings.database_url)
    requeued: list[str] = []
    try:
        with transaction(make_sessionmaker(engine)) as session:
            for version in repository.stale_builds(session, utcnow() - stale_after):
                if (version.attempts or 0) >= MAX_ATTEMPTS:
                    version.status = "failed"
                    version.error = f"the build stopped responding {version.attempts} times (worker killed or out of memory)"
                    continue
                # Fresh heartbeat so the next reaper pass does not send it twice before a worker picks it up.
                version.heartbeat_at = utcnow()
                requeued.append(str(version.id))
        for version_id in requeued:
            tasks.send(BUILD_TASK, [version_id], CPU_QUEUE)
    finally:
        engine.dispose()
    return requeued


@shared_task(name="samtune.reap_stale_builds", bind=True)
def reap_stale_builds_task(self) -> list[str]:  # type: ignore[no-untyped-def]
    return reap_stale_builds(self.app.conf.samtune_settings, CeleryQueue(self.app))
