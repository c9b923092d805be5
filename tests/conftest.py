"""Shared fixtures: real PostgreSQL and SQLite (migrated by Alembic), a real S3 endpoint (moto's
server over HTTP), and an app whose every request runs in a transaction rolled back after the test. The
helpers they use live in tests/support."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before tests.support is first imported: its helpers' asserts report like a test's own.
pytest.register_assert_rewrite("tests.support")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from app.core import migrate  # noqa: E402
from app.core.db import make_engine, transaction  # noqa: E402
from app.core.deps import get_session  # noqa: E402
from app.keys.service import create_key_for_workspace  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.support.databases import POSTGRES_URL, ensure_postgres_database, reset_postgres  # noqa: E402
from tests.support.s3 import fresh_bucket, moto_server  # noqa: E402

# The jobs kit, shared by the jobs and the models tests.
pytest_plugins = ["tests.support.jobs"]

# Tests that `make test` leaves to `make test-long` to stay within its 20 minutes: each has a twin there
# that covers the same mechanism more cheaply, or is a soak of what another test covers once. Node ids
# (parameters included) -> why.
LONG_ONLY = {
    "tests/trainer/test_e2e.py::test_fine_tuning_learns_a_concept_the_base_lacks": "a learning-quality run; tests/jobs and tests/ui train through the service",
    "tests/jobs/test_job_faults.py::test_sigkilled_worker_is_replaced_and_the_job_resumes_from_its_last_checkpoint": "a SIGKILL fault run; tests/trainer/test_checkpoint_by_time.py kills a run and resumes it from its checkpoint",
    "tests/jobs/test_job_faults.py::test_redis_restart_loses_no_job": "a broker outage soak",
    "tests/jobs/test_checkpoint_upload.py::test_a_worker_killed_during_an_upload_resumes_from_the_previous_complete_checkpoint": "a SIGKILL fault run (54 s); tests/trainer/test_checkpoint_by_time.py kills a run and resumes it from its checkpoint, and tests/jobs/test_job_faults.py's reaper tests take over a dead worker's job",
    "tests/jobs/test_job_faults.py::test_api_restart_changes_nothing_for_running_jobs": "an API restart soak",
    "tests/jobs/test_job_faults.py::test_a_batch_prediction_whose_worker_was_killed_is_retried_by_the_reaper": "the reaper's requeue is tested for versions in tests/versions and for jobs here",
    "tests/deploy/test_topology.py::test_production_topology_runs_the_whole_flow": "tests/deploy/test_compose.py checks the compose file; the embedded topology runs the whole flow",
    "tests/test_samtune_cli.py::test_up_supervises_and_restarts_a_dead_worker": "tests/deploy/test_topology.py's `make run` test kills and sees restarted a worker of `samtune up`",
    "tests/models/test_inference_service.py::test_two_services_behind_the_api_one_killed_mid_load[postgres]": "the same on SQLite; the services never touch the database's dialect",
    "tests/models/test_predict_limits.py::test_healthz_and_other_clients_answer_under_abusive_requests[postgres]": "the same on SQLite",
    "tests/jobs/test_jobs_api.py::test_webhook_task_retries_by_itself_in_a_real_worker[postgres]": "the same on SQLite",
    "tests/datasets/test_coco_memory.py::test_a_large_coco_file_is_uploaded_in_bounded_memory[postgres]": "the same on SQLite: the item-at-a-time parse and the batched inserts are the same code on both dialects",
    "tests/jobs/test_job_gpus.py::test_a_two_process_job_matches_one_process_with_the_same_global_batch[postgres]": "the same on SQLite; the two processes meet through gloo, not the database",
    **{
        f"tests/test_bench_scripts.py::test_one_off_script_runs_on_the_cpu[{name}]": "test_script_starts and the import check cover it"
        for name in ("predict_full_size", "gpu_predict_http", "gpu_breakdown", "gpu_batch_predict")
    },
    **{
        f"tests/jobs/test_hub_download_job.py::{t}[postgres]": "the same on SQLite; the download never touches the database"
        for t in (
            "test_the_first_job_on_facebook_sam3_downloads_it_as_a_phase_then_trains",
            "test_a_gated_refusal_fails_the_job_saying_what_to_do",
            "test_without_a_token_or_with_hf_hub_offline_it_is_not_offered",
        )
    },
}
# The batch-chunking grid: its diagonal (each chunk size once, each NMS setting once) in `make test`.
LONG_ONLY.update({
    f"tests/models/test_batch_chunks.py::test_chunked_batch_equals_one_by_one[{c}-nms{n}]":
        "the grid's diagonal runs in make test"
    for c in ("2-chunks0", "1-chunks1", "8-chunks2") for n in range(3)
    if (c, n) not in {("2-chunks0", 0), ("1-chunks1", 1), ("8-chunks2", 2)}
})  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid in LONG_ONLY:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    ensure_postgres_database(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'samtune.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        engine = make_engine(url)
        reset_postgres(engine)
        engine.dispose()
    migrate.upgrade(url)
    yield url


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """One connection per test inside an outer transaction that is rolled back at the end: requests
    commit to savepoints, so the test sees their effects and the next test sees none of them."""
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        outer.rollback()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    return sessionmaker(bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint")


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with transaction(session_factory) as session:
        yield session


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        storage_url=(tmp_path / "objects").as_uri(),
    )


@pytest.fixture
def make_client(session_factory: sessionmaker[Session]):
    clients: list[TestClient] = []

    def _make(settings: Settings) -> TestClient:
        app = create_app(settings)

        def _session() -> Iterator[Session]:
            with transaction(session_factory) as session:
                yield session

        app.dependency_overrides[get_session] = _session
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client, settings: Settings) -> TestClient:
    return make_client(settings)


@pytest.fixture
def new_key(session_factory: sessionmaker[Session]):
    def _new(workspace: str | None = None) -> str:
        with transaction(session_factory) as session:
            _, secret = create_key_for_workspace(session, workspace or f"ws-{uuid.uuid4().hex[:8]}")
        return secret

    return _new


@pytest.fixture
def api_key(new_key) -> str:
    return new_key()


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


# --- S3: moto's standalone server, a real HTTP endpoint -------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("SAMTUNE_TEST_S3_ENDPOINT")
    if existing:
        yield existing
        return
    server = moto_server(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start(timeout=30, interval=0.1)
    yield server.url
    server.stop(grace=10)


@pytest.fixture
def s3_settings(tmp_path: Path, s3_endpoint: str) -> Settings:
    """Settings pointing at a fresh bucket; combine with the database of `settings` where both are needed."""
    bucket = fresh_bucket(s3_endpoint)
    return Settings(
        data_dir=tmp_path / "data",
        storage_url=f"s3://{bucket}/samtune",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
