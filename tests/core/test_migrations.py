"""`alembic upgrade head` and `downgrade base` on SQLite and PostgreSQL, and the models match the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.core import migrate
from app.core.db import make_engine
from app.tables import Base


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    admin = make_engine(base.rsplit("/", 1)[0] + "/postgres")
    name = "samtune_migrations_test"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_upgrade_downgrade_roundtrip(fresh_url: str) -> None:
    migrate.upgrade(fresh_url)
    engine = make_engine(fresh_url)
    tables = set(inspect(engine).get_table_names())
    assert {"workspace", "api_key", "dataset", "category", "image", "annotation", "dataset_version",
            "training_job", "metric", "model"} <= tables  # fmt: skip

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"

    migrate.downgrade(fresh_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(fresh_url)
    assert "dataset" in inspect(engine).get_table_names()
    engine.dispose()
