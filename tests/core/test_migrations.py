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
from tests.support.databases import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path):
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


def test_the_resume_pointer_moves_to_its_columns_and_back(fresh_url: str) -> None:
    """0005 carries a job's resume pointer out of `progress` (which the heartbeat rewrites whole) into columns
    of its own, and the downgrade puts it back."""
    import json
    import uuid

    from sqlalchemy import text

    migrate.upgrade(fresh_url, "0004")
    engine = make_engine(fresh_url)
    ws, ds, ver, job, plain = (uuid.uuid4().hex if fresh_url.startswith("sqlite") else str(uuid.uuid4())
                               for _ in range(5))  # fmt: skip
    pointer = {
        "prefix": "jobs/j/attempt-1/checkpoints/step-4-ab",
        "step": 4,
        "best_prefix": "jobs/j/attempt-1/checkpoints",
    }
    shown = {"step": 6, "total_steps": 10}
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO workspace (id, name, created_at) VALUES (:i, 'w', CURRENT_TIMESTAMP)"),
            {"i": ws},
        )
        conn.execute(text("INSERT INTO dataset (id, workspace_id, name, slug, created_at) "
                          "VALUES (:i, :w, 'd', 'd', CURRENT_TIMESTAMP)"), {"i": ds, "w": ws})  # fmt: skip
        conn.execute(text("INSERT INTO dataset_version (id, dataset_id, number, spec, status, progress, split_counts, "
                          "dropped, classes, attempts, created_at) VALUES (:i, :d, 1, '{}', 'ready', 1.0, '{}', '{}', "
                          "'[]', 1, CURRENT_TIMESTAMP)"), {"i": ver, "d": ds})  # fmt: skip
        for job_id, progress in ((job, shown | {"checkpoint": pointer}), (plain, shown)):
            conn.execute(
                text("INSERT INTO training_job (id, workspace_id, version_id, base_model, mode, overrides, "
                     "hyperparameters, status, attempt, max_restarts, stop_requested, cancel_requested, progress, "
                     "created_at) VALUES (:i, :w, :v, 'b', 'decoder', '{}', '{}', 'running', 1, 3, false, false, "
                     ":p, CURRENT_TIMESTAMP)"),
                {"i": job_id, "w": ws, "v": ver, "p": json.dumps(progress)},
            )  # fmt: skip
    engine.dispose()

    def rows() -> dict[str, tuple]:
        engine = make_engine(fresh_url)
        try:
            with engine.connect() as conn:
                columns = {c["name"] for c in inspect(conn).get_columns("training_job")}
                extra = (
                    ", checkpoint_prefix, checkpoint_step, best_checkpoint_prefix"
                    if "checkpoint_step" in columns
                    else ""
                )
                found = conn.execute(text(f"SELECT id, progress{extra} FROM training_job")).all()  # noqa: S608
        finally:
            engine.dispose()
        decode = lambda p: json.loads(p) if isinstance(p, str) else p  # noqa: E731
        return {str(r[0]).replace("-", ""): (decode(r[1]), *r[2:]) for r in found}

    migrate.upgrade(fresh_url)
    up = rows()
    assert up[job.replace("-", "")] == (shown, pointer["prefix"], 4, pointer["best_prefix"])
    assert up[plain.replace("-", "")] == (shown, None, None, None)
    migrate.downgrade(fresh_url, "0004")
    down = rows()
    assert down[job.replace("-", "")] == (shown | {"checkpoint": pointer},)
    assert down[plain.replace("-", "")] == (shown,)


def test_model_columns_and_evaluation_keys_are_renamed_and_back(fresh_url: str) -> None:
    """0006: a model's `name` becomes `version_name`, `checkpoint_key` becomes `checkpoint_prefix`, and its
    evaluation results take the API's keys; the downgrade restores both."""
    import json
    import uuid

    from sqlalchemy import text

    migrate.upgrade(fresh_url, "0005")
    engine = make_engine(fresh_url)
    ws, ds, ver, job, model = (uuid.uuid4().hex if fresh_url.startswith("sqlite") else str(uuid.uuid4())
                               for _ in range(5))  # fmt: skip
    old = {"base": {"summary": {"segm_AP": 0.1}}, "fine_tuned": {"summary": {"segm_AP": 0.5}},
           "valid_best": {"segm_AP": 0.4}}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO workspace (id, name, created_at) VALUES (:i, 'w', CURRENT_TIMESTAMP)"),
            {"i": ws},
        )
        conn.execute(text("INSERT INTO dataset (id, workspace_id, name, slug, created_at) "
                          "VALUES (:i, :w, 'd', 'd', CURRENT_TIMESTAMP)"), {"i": ds, "w": ws})  # fmt: skip
        conn.execute(text("INSERT INTO dataset_version (id, dataset_id, number, spec, status, progress, split_counts, "
                          "dropped, classes, attempts, created_at) VALUES (:i, :d, 1, '{}', 'ready', 1.0, '{}', '{}', "
                          "'[]', 1, CURRENT_TIMESTAMP)"), {"i": ver, "d": ds})  # fmt: skip
        conn.execute(
            text("INSERT INTO training_job (id, workspace_id, version_id, base_model, mode, overrides, "
                 "hyperparameters, status, attempt, max_restarts, stop_requested, cancel_requested, progress, "
                 "created_at) VALUES (:i, :w, :v, 'b', 'decoder', '{}', '{}', 'succeeded', 1, 3, false, false, "
                 "'{}', CURRENT_TIMESTAMP)"),
            {"i": job, "w": ws, "v": ver},
        )  # fmt: skip
        conn.execute(
            text("INSERT INTO model (id, workspace_id, job_id, name, checkpoint_key, checkpoint_sha256, "
                 "eval_results, status, created_at) VALUES (:i, :w, :j, 'd/1', 'models/m', 'ab', :e, 'ready', "
                 "CURRENT_TIMESTAMP)"),
            {"i": model, "w": ws, "j": job, "e": json.dumps(old)},
        )  # fmt: skip
    engine.dispose()

    def row(name: str, prefix: str) -> tuple:
        engine = make_engine(fresh_url)
        try:
            with engine.connect() as conn:
                found = conn.execute(text(f"SELECT {name}, {prefix}, eval_results FROM model")).one()  # noqa: S608
        finally:
            engine.dispose()
        return found[0], found[1], json.loads(found[2]) if isinstance(found[2], str) else found[2]

    migrate.upgrade(fresh_url)
    assert row("version_name", "checkpoint_prefix") == ("d/1", "models/m", {
        "best_valid": old["valid_best"], "test": {"base": old["base"], "fine_tuned": old["fine_tuned"]}})  # fmt: skip
    migrate.downgrade(fresh_url, "0005")
    assert row("name", "checkpoint_key") == ("d/1", "models/m", old)
