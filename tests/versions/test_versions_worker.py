"""Versions built by a real Celery worker process on the `cpu` queue: Redis + PostgreSQL (production) and
the embedded default (filesystem transport + SQLite). The API answers 202 at once; the worker builds."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.queue import CeleryQueue
from app.core.tasks import make_celery
from app.keys.service import create_key_for_workspace
from app.main import create_app
from app.settings import Settings
from app.versions.reaper import reap_stale_builds
from app.versions.tables import DatasetVersion
from tests.factories import roboflow_zip
from tests.support.databases import fresh_postgres_database
from tests.support.processes import Proc
from tests.support.waiting import wait_until

REDIS_DB = 14


@pytest.fixture(params=["redis-postgres", "embedded"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    data = tmp_path / "data"
    if request.param == "redis-postgres":
        url = fresh_postgres_database(request.getfixturevalue("postgres_url"), "samtune_worker_test")
        broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
        redis.Redis.from_url(broker).flushdb()
        settings = Settings(data_dir=data, database_url=url, broker_url=broker)
    else:
        settings = Settings(data_dir=data)
    migrate.upgrade(settings.database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
    env.update(
        SAMTUNE_DATA_DIR=str(settings.data_dir),
        SAMTUNE_DATABASE_URL=settings.database_url,
        SAMTUNE_BROKER_URL=settings.broker_url,
        SAMTUNE_STORAGE_URL=settings.storage_url,
    )
    # Its own process group, stopped as the job tests stop theirs: SIGTERM (warm shutdown), then SIGKILL to
    # what is left. A warm shutdown that outlasted a bare wait() on a loaded CI machine once failed this
    # test's teardown after every assertion had passed; shutdown itself is tested in tests/jobs.
    worker = Proc("worker", [sys.executable, "-m", "app.cli", "worker", "-Q", "cpu"], env, tmp_path)
    try:
        yield settings
    finally:
        worker.stop(grace=60)
        print(worker.log()[-3000:])


def _key(settings: Settings) -> dict[str, str]:
    engine = make_engine(settings.database_url)
    with transaction(make_sessionmaker(engine)) as session:
        _, secret = create_key_for_workspace(session, "live")
    engine.dispose()
    return {"Authorization": f"Bearer {secret}"}


def _wait_ready(client: TestClient, auth: dict[str, str], version_id: str, timeout: float = 90) -> dict:
    def built() -> dict | None:
        v = client.get(f"/api/v1/versions/{version_id}", headers=auth).json()
        return v if v["status"] != "building" else None

    return wait_until(built, timeout=timeout, interval=0.3, message=f"version {version_id} to stop building")


@pytest.mark.timeout(300)
def test_worker_builds_versions_and_reaper_restarts_lost_builds(live: Settings, tmp_path: Path) -> None:
    auth = _key(live)
    with TestClient(create_app(live)) as client:
        ds = client.post("/api/v1/datasets", json={"name": "live"}, headers=auth).json()
        with open(roboflow_zip(tmp_path / "rf.zip", {"train": 4, "valid": 1}), "rb") as f:
            r = client.post(
                f"/api/v1/datasets/{ds['id']}/uploads", files={"file": ("rf.zip", f)}, headers=auth
            )
        assert r.status_code == 201, r.text

        t0 = time.monotonic()
        r = client.post(f"/api/v1/datasets/{ds['id']}/versions", json={}, headers=auth)
        assert r.status_code == 202 and r.json()["status"] == "building"
        assert time.monotonic() - t0 < 5  # the request does not build
        v = _wait_ready(client, auth, r.json()["id"])
        assert v["status"] == "ready", v
        assert v["splits"]["train"] == {"images": 4, "annotations": 8}

        # A build whose worker died: the row says building, no message is in flight, the heartbeat is old.
        engine = make_engine(live.database_url)
        with transaction(make_sessionmaker(engine)) as session:
            lost = DatasetVersion(
                dataset_id=uuid.UUID(ds["id"]), number=2, spec=v["spec"], status="building",
                heartbeat_at=utcnow() - timedelta(minutes=10), attempts=1,
            )  # fmt: skip
            session.add(lost)
            session.flush()
            lost_id = str(lost.id)
        engine.dispose()
        requeued = reap_stale_builds(live, CeleryQueue(make_celery(live)))
        assert requeued == [lost_id]
        v2 = _wait_ready(client, auth, lost_id)
        assert v2["status"] == "ready" and v2["content_hash"] == v["content_hash"]
        # Nothing is stale now.
        assert reap_stale_builds(live, CeleryQueue(make_celery(live))) == []
