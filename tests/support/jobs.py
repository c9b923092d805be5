"""Training jobs for the API tests: `JobKit` (a committed database, an API client with a recording task
queue, a ready 112 px version, jobs run in-process with the real worker code) and its fixture `jobs_kit`,
which the jobs and the models tests share (the root conftest lists this module in `pytest_plugins`)."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session, sessionmaker

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker, transaction
from app.core.storage import make_storage
from app.jobs.runner import run_job
from app.jobs.tables import TrainingJob
from app.keys.service import create_key_for_workspace
from app.main import create_app
from app.settings import Settings
from app.versions.builder import build_version
from tests.support.databases import drop_postgres_database, fresh_postgres_database
from trainer.base_model import EMBEDDED_BASE
from trainer.synth import HELD_OUT_DOMAINS, write_dataset

# Redis databases these tests may use (the server is shared): the live feed, and a Celery broker.
FEED_REDIS_URL = "redis://127.0.0.1:6379/5"
BROKER_REDIS_URL = "redis://127.0.0.1:6379/6"

SMALL_VERSION = {"preprocessing": {"resize": {"width": 112, "height": 112}}}
# A few decoder-mode steps on the bundled tiny model: 2 train images, batch 2, 2 epochs = 2 steps.
FAST_HYPERPARAMETERS: dict[str, Any] = {"epochs": 2, "checkpoint_every_steps": 2, "eval_base_model": False}


class RecordingQueue:
    """A TaskQueue that keeps the messages (task, args, queue) instead of sending them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], str]] = []
        self._lock = threading.Lock()

    def send(self, task: str, args: list[str], queue: str) -> None:
        with self._lock:
            self.sent.append((task, list(args), queue))

    def for_job(self, job_id: str) -> list[tuple[str, list[str], str]]:
        return [m for m in self.sent if m[1] == [job_id]]


class JobKit:
    """A committed database, an API client with a recording task queue, a ready 112 px version, and the
    means to create jobs and run them in-process with the real worker code."""

    def __init__(self, backend: str, root: Path, database_url: str) -> None:
        self.backend, self.root, self.database_url = backend, root, database_url
        self.engine = make_engine(database_url)
        self.factory: sessionmaker[Session] = make_sessionmaker(self.engine)
        self.settings = self.make_settings()
        self.storage = make_storage(self.settings)
        self.tasks = RecordingQueue()
        self._clients: list[TestClient] = []
        self.client = self.make_client(self.settings)
        self.auth = self.new_auth("jobs-kit")
        self._zip: Path | None = None
        self.dataset_id, self.version = self.ready_version("shapes")

    # settings and clients
    def make_settings(self, **overrides: Any) -> Settings:
        """Settings of this kit's database and storage; a worker's heartbeat and flushes are fast."""
        values: dict[str, Any] = {
            "data_dir": self.root / "data",
            "database_url": self.database_url,
            "storage_url": (self.root / "objects").as_uri(),
            "secret_key": "jobs-tests-signing-key",
            "worker_device": "cpu",
            "job_heartbeat_seconds": 1.0,
            "metrics_flush_seconds": 0.3,
            # The tests' webhook receivers listen on 127.0.0.1, which webhooks may reach only when allowed.
            "webhook_allowed_hosts": "127.0.0.1",
        }
        return Settings(**(values | overrides))

    def redis_settings(self, **overrides: Any) -> Settings:
        return self.make_settings(redis_url=FEED_REDIS_URL, **overrides)

    def make_app(self, settings: Settings, tasks: Any = None) -> Any:
        app = create_app(settings)
        app.state.tasks = tasks or self.tasks
        return app

    def make_client(self, settings: Settings, tasks: Any = None) -> TestClient:
        client = TestClient(self.make_app(settings, tasks), raise_server_exceptions=False)
        client.__enter__()
        self._clients.append(client)
        return client

    def new_auth(self, workspace: str | None = None) -> dict[str, str]:
        with transaction(self.factory) as session:
            _, secret = create_key_for_workspace(session, workspace or f"ws-{uuid.uuid4().hex[:8]}")
        return {"Authorization": f"Bearer {secret}"}

    # data
    def dataset_zip(self) -> Path:
        if self._zip is None:
            data = write_dataset(self.root / "synth", list(HELD_OUT_DOMAINS["new-colours"]),
                                 {"train": 2, "valid": 1, "test": 1}, size=112, seed=1, max_objects=2)  # fmt: skip
            self._zip = Path(shutil.make_archive(str(self.root / "synth"), "zip", data))
        return self._zip

    def new_dataset(self, name: str, auth: dict[str, str] | None = None) -> str:
        auth = auth or self.auth
        r = self.client.post("/api/v1/datasets", json={"name": name}, headers=auth)
        assert r.status_code == 201, r.text
        with open(self.dataset_zip(), "rb") as f:
            up = self.client.post(
                f"/api/v1/datasets/{r.json()['id']}/uploads", files={"file": ("synth.zip", f)}, headers=auth
            )
        assert up.status_code == 201, up.text
        return r.json()["id"]

    def new_version(self, dataset_id: str, auth: dict[str, str] | None = None, *, build: bool = True) -> dict:
        auth = auth or self.auth
        r = self.client.post(f"/api/v1/datasets/{dataset_id}/versions", json=SMALL_VERSION, headers=auth)
        assert r.status_code == 202, r.text
        if build:
            build_version(self.factory, self.storage, self.settings, uuid.UUID(r.json()["id"]))
            r = self.client.get(f"/api/v1/versions/{r.json()['id']}", headers=auth)
        return r.json()

    def ready_version(self, name: str, auth: dict[str, str] | None = None) -> tuple[str, dict]:
        dataset_id = self.new_dataset(name, auth)
        version = self.new_version(dataset_id, auth)
        assert version["status"] == "ready", version
        return dataset_id, version

    # jobs
    def job_body(self, version_id: str | None = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "version_id": version_id or self.version["id"],
            # Named, not the default: with Meta's weights in the hub cache the default would be facebook/sam3.
            "base_model": EMBEDDED_BASE,
            "mode": "decoder",
            "hyperparameters": dict(FAST_HYPERPARAMETERS),
        }
        return body | extra

    def create(
        self, client: TestClient | None = None, auth: dict[str, str] | None = None, **body: Any
    ) -> dict:
        r = (client or self.client).post(
            "/api/v1/jobs", json=self.job_body(**body), headers=auth or self.auth
        )
        assert r.status_code == 201, r.text
        return r.json()

    def get(self, job_id: str, auth: dict[str, str] | None = None) -> dict:
        r = self.client.get(f"/api/v1/jobs/{job_id}", headers=auth or self.auth)
        assert r.status_code == 200, r.text
        return r.json()

    def run(self, job_id: str, settings: Settings | None = None) -> str:
        """One attempt of the job, in this process, with the real worker code."""
        return run_job(settings or self.settings, uuid.UUID(job_id), self.tasks)

    def update(self, table: Any, row_id: str | uuid.UUID, **values: Any) -> None:
        """Set columns of one row directly (states the API cannot produce on demand, like a failed build)."""
        with transaction(self.factory) as session:
            session.execute(sa_update(table).where(table.id == uuid.UUID(str(row_id))).values(**values))

    def cancel_all_queued(self) -> None:
        """Leftover queued jobs of earlier tests would count in queue positions (they are global)."""
        with transaction(self.factory) as session:
            session.execute(
                sa_update(TrainingJob).where(TrainingJob.status == "queued").values(status="cancelled")
            )

    def close(self) -> None:
        for client in self._clients:
            client.__exit__(None, None, None)
        self.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def jobs_kit(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobKit]:
    """One committed database per test module and backend, with a ready version (see JobKit)."""
    root = tmp_path_factory.mktemp(f"jobs-{request.param}")
    module = request.module.__name__.rsplit(".", 1)[-1]
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'samtune.db'}"
    else:
        # Named after the module: test files using this kit never share (or drop) each other's database.
        url = fresh_postgres_database(request.getfixturevalue("postgres_url"), f"samtune_{module}"[:60])
    migrate.upgrade(url)
    kit = JobKit(request.param, root, url)
    yield kit
    kit.close()
    if request.param == "postgres":
        drop_postgres_database(url)
