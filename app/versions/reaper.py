"""The versions reaper, run by beat: a build whose lease expired lost its worker (killed, out of memory). It
is sent again, and failed after MAX_ATTEMPTS tries (the rule of app/core/lease.py)."""

from __future__ import annotations

from datetime import timedelta

from app.core import lease
from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.lease import may_start
from app.core.queue import TaskQueue
from app.core.tasks import BUILD_VERSION, CPU_QUEUE
from app.settings import Settings
from app.versions import repository
from app.versions.repository import BUILD_LEASE, MAX_ATTEMPTS
from app.versions.tables import DatasetVersion

__all__ = ["MAX_ATTEMPTS", "reap_stale_builds"]


def reap_stale_builds(
    settings: Settings, tasks: TaskQueue, *, stale_after: timedelta = BUILD_LEASE
) -> list[str]:
    """Re-enqueue builds whose worker went silent or whose message went missing; fail those that already had
    MAX_ATTEMPTS tries."""
    engine = make_engine(settings.database_url)
    requeued: list[str] = []
    try:
        with transaction(make_sessionmaker(engine)) as session:
            now = utcnow()

            def judge(version: DatasetVersion, retry: bool) -> None:
                if not retry:
                    version.status = "failed"
                    version.error = repository.gave_up(version.attempts)
                    return
                # Marked sent, so the next reaper pass does not send it twice before a worker picks it up.
                lease.sent(repository.LEASED, version, now)
                requeued.append(str(version.id))

            for expired in repository.expired_builds(session, now):
                judge(expired.row, expired.retry)
            # After the expired ones are marked sent: fenced out, they are unclaimed too, and not to send twice.
            for version in repository.unclaimed_builds(session, now - stale_after):
                judge(version, may_start((version.attempts or 0) + 1, MAX_ATTEMPTS))
        for version_id in requeued:
            tasks.send(BUILD_VERSION, [version_id], CPU_QUEUE)
    finally:
        engine.dispose()
    return requeued
