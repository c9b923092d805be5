"""Shared fixtures: real PostgreSQL and SQLite (migrated by Alembic), a real S3 endpoint (moto's
server over HTTP), and an app whose every request runs in a transaction rolled back after the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core import migrate
from app.core.db import make_engine, transaction
from app.core.deps import get_session
from app.keys.service import create_key_for_workspace
from app.main import create_app
from app.settings import Settings

POSTGRES_URL = os.environ.get(
    "SAMTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/samtune_test"
)


def _ensure_postgres_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = make_engine(target.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def _reset_postgres(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))


def fresh_postgres_database(base_url: str, name: str) -> str:
    """Drop and create database `name` next to `base_url`'s; returns its URL."""
    admin = make_engine(base_url.rsplit("/", 1)[0] + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(url: str) -> None:
    """Drop the database `url` names (the counterpart of fresh_postgres_database)."""
    base, name = url.rsplit("/", 1)
    admin = make_engine(base + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    _ensure_postgres_database(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'samtune.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        engine = make_engine(url)
        _reset_postgres(engine)
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
def make_client(session_factory: sessionmaker[Session]):  # type: ignore[no-untyped-def]
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
def client(make_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return make_client(settings)


@pytest.fixture
def new_key(session_factory: sessionmaker[Session]):  # type: ignore[no-untyped-def]
    def _new(workspace: str | None = None) -> str:
        with transaction(session_factory) as session:
            _, secret = create_key_for_workspace(session, workspace or f"ws-{uuid.uuid4().hex[:8]}")
        return secret

    return _new


@pytest.fixture
def api_key(new_key) -> str:  # type: ignore[no-untyped-def]
    return new_key()


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


# --- S3: moto's standalone server, a real HTTP endpoint -------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    existing = os.environ.get("SAMTUNE_TEST_S3_ENDPOINT")
    if existing:
        yield existing
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    """A boto3 client for the test S3 endpoint (moto takes any credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def fresh_bucket(endpoint: str, prefix: str = "samtune-test") -> str:
    """A new, empty bucket on the test S3 endpoint; returns its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


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
