"""The versions reaper, run by beat: a build whose lease expired lost its worker (killed, out of memory). It
is sent again, and failed after MAX_ATTEMPTS tries (the rule of app/core/lease.py)."""

from __future__ import annotations

from datetime import timedelta

from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.lease import may_start
from app.core.queue import TaskQueue
from app.core.tasks import BUILD_VERSION, CPU_QUEUE
from app.settings import Settings
from app.versions import repository
from app.versions.repository import BUILD_LEASE, MAX_ATTEMPTS

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
            judged = [(e.row, e.retry) for e in repository.expired_builds(session, now)]
            judged += [
                (v, may_start((v.attempts or 0) + 1, MAX_ATTEMPTS))
                for v in repository.unclaimed_builds(session, now - stale_after)
            ]
            for version, retry in judged:
                if not retry:
                    version.status = "failed"
                    version.error = f"the build stopped responding {version.attempts} times (worker killed or out of memory)"
                    continue
                # Fresh heartbeat so the next reaper pass does not send it twice before a worker picks it up.
                version.heartbeat_at = now
                requeued.append(str(version.id))
        for version_id in requeued:
            tasks.send(BUILD_VERSION, [version_id], CPU_QUEUE)
    finally:
        engine.dispose()
    return requeued
