"""PostgreSQL databases for the tests: the shared one of the `postgres_url` fixture, and fresh ones for the
tests whose code opens engines of its own (and so cannot use a rolled-back connection)."""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from app.core.db import make_engine

POSTGRES_URL = os.environ.get(
    "SAMTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/samtune_test"
)


def ensure_postgres_database(url: str) -> None:
    """Create the database `url` names unless it exists (it is kept between runs)."""
    target = make_url(url)
    admin = make_engine(target.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def reset_postgres(engine: Engine) -> None:
    """Empty the database of `engine` (its public schema dropped and made again)."""
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
