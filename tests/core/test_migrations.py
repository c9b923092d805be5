"""`alembic upgrade head` and `downgrade base` on SQLite and PostgreSQL, and the models match the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.core import migrate
from app.core.db import make_engine
from app.tables import Base
from tests.conftest import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    yield fresh_postgres_database(request.getfixturevalue("postgres_url"), "samtune_migrations_test")


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
