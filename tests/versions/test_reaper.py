"""The reaper re-enqueues builds whose worker went quiet, and gives up after MAX_ATTEMPTS."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import redis

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.queue import CeleryQueue
from app.core.tasks import make_celery
from app.datasets.tables import Dataset
from app.settings import Settings
from app.versions.reaper import MAX_ATTEMPTS, reap_stale_builds
from app.versions.repository import BUILD_LEASE, gave_up
from app.versions.tables import DatasetVersion
from app.workspaces.tables import Workspace


def test_reaper_requeues_quiet_builds_and_fails_hopeless_ones(tmp_path: Path) -> None:
    broker = "redis://127.0.0.1:6379/13"
    redis.Redis.from_url(broker).flushdb()
    settings = Settings(data_dir=tmp_path, broker_url=broker)
    migrate.upgrade(settings.database_url)
    factory = make_sessionmaker(make_engine(settings.database_url))
    old = utcnow() - timedelta(minutes=10)
    with transaction(factory) as session:
        ws = Workspace(name="w")
        session.add(ws)
        session.flush()
        ds = Dataset(workspace_id=ws.id, name="d", slug="d")
        session.add(ds)
        session.flush()
        quiet = DatasetVersion(
            dataset_id=ds.id, number=1, spec={}, status="building", heartbeat_at=old, attempts=1
        )
        hopeless = DatasetVersion(
            dataset_id=ds.id, number=2, spec={}, status="building", heartbeat_at=old, attempts=MAX_ATTEMPTS
        )
        alive = DatasetVersion(dataset_id=ds.id, number=3, spec={}, status="building", heartbeat_at=utcnow())
        done = DatasetVersion(dataset_id=ds.id, number=4, spec={}, status="ready", heartbeat_at=old)
        session.add_all([quiet, hopeless, alive, done])
        session.flush()
        ids = {v.number: str(v.id) for v in (quiet, hopeless, alive, done)}

    queue = CeleryQueue(make_celery(settings))
    assert reap_stale_builds(settings, queue) == [ids[1]]
    # The message sits in Redis, in the cpu queue, naming the build task and the version.
    messages = [json.loads(m) for m in redis.Redis.from_url(broker).lrange("cpu", 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
        ("samtune.build_version", repr([ids[1]]))
    ]
    with transaction(factory) as session:
        statuses = {v.number: (v.status, v.error) for v in session.query(DatasetVersion)}
    assert statuses[1] == ("building", None)
    assert statuses[2][0] == "failed" and "stopped responding" in statuses[2][1]
    assert statuses[3] == ("building", None) and statuses[4][0] == "ready"
    # Just re-enqueued: not sent again on the next pass.
    assert reap_stale_builds(settings, queue) == []


def test_reaper_sends_a_build_whose_lease_expired_once(tmp_path: Path) -> None:
    """Fenced out by the reaper, an expired build holds no lease, as an unclaimed one does: it is judged and
    sent once (not a second time as 'unclaimed'), its attempts untouched (the next claim counts them)."""
    broker = "redis://127.0.0.1:6379/13"
    redis.Redis.from_url(broker).flushdb()
    settings = Settings(data_dir=tmp_path, broker_url=broker)
    migrate.upgrade(settings.database_url)
    factory = make_sessionmaker(make_engine(settings.database_url))
    old = utcnow() - timedelta(minutes=10)
    with transaction(factory) as session:
        ws = Workspace(name="w")
        session.add(ws)
        session.flush()
        ds = Dataset(workspace_id=ws.id, name="d", slug="d")
        session.add(ds)
        session.flush()
        lost = DatasetVersion(dataset_id=ds.id, number=1, spec={}, status="building", heartbeat_at=old,
                              lease_token="silent", lease_expires_at=old + BUILD_LEASE, attempts=1)  # fmt: skip
        spent = DatasetVersion(dataset_id=ds.id, number=2, spec={}, status="building", heartbeat_at=old,
                               lease_token="silent", lease_expires_at=old + BUILD_LEASE,
                               attempts=MAX_ATTEMPTS)  # fmt: skip
        held = DatasetVersion(dataset_id=ds.id, number=3, spec={}, status="building", heartbeat_at=utcnow(),
                              lease_token="alive", lease_expires_at=utcnow() + BUILD_LEASE, attempts=1)  # fmt: skip
        session.add_all([lost, spent, held])
        session.flush()
        ids = {v.number: str(v.id) for v in (lost, spent, held)}

    queue = CeleryQueue(make_celery(settings))
    assert reap_stale_builds(settings, queue) == [ids[1]]
    messages = [json.loads(m) for m in redis.Redis.from_url(broker).lrange("cpu", 0, -1)]
    assert [m["headers"]["argsrepr"] for m in messages] == [repr([ids[1]])]
    with transaction(factory) as session:
        rows = {v.number: v for v in session.query(DatasetVersion)}
        assert (rows[1].status, rows[1].lease_token, rows[1].attempts) == ("building", None, 1)
        assert rows[2].status == "failed" and rows[2].error == gave_up(MAX_ATTEMPTS)
        assert (rows[3].status, rows[3].lease_token) == ("building", "alive")
    assert reap_stale_builds(settings, queue) == []
