"""Version builds' Celery tasks: shells around app/versions/runner.py and app/versions/reaper.py."""

from __future__ import annotations

import uuid

from celery import shared_task

from app.core.queue import CeleryQueue
from app.core.tasks import BUILD_VERSION, REAP_STALE_BUILDS
from app.versions.reaper import reap_stale_builds
from app.versions.runner import run_build


@shared_task(name=BUILD_VERSION, bind=True)
def build_version_task(self, version_id: str) -> str:  # type: ignore[no-untyped-def]
    return run_build(self.app.conf.samtune_settings, uuid.UUID(version_id))


@shared_task(name=REAP_STALE_BUILDS, bind=True)
def reap_stale_builds_task(self) -> list[str]:  # type: ignore[no-untyped-def]
    return reap_stale_builds(self.app.conf.samtune_settings, CeleryQueue(self.app))
