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
