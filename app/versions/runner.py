"""One build, as a worker runs it: app/versions/builder.py with an engine and storage of its own. The builder
claims the version's lease (a second delivery of the message, or a second worker, then does nothing) and
fences every write it makes after that by its token."""

from __future__ import annotations

import uuid

from app.core.db import make_engine, make_sessionmaker
from app.core.storage import make_storage
from app.settings import Settings
from app.versions.builder import build_version


def run_build(settings: Settings, version_id: uuid.UUID) -> str:
    """One attempt at the build (or nothing, if it is not ours to run); the outcome in a word."""
    engine = make_engine(settings.database_url)
    try:
        return build_version(make_sessionmaker(engine), make_storage(settings), settings, version_id)
    finally:
        engine.dispose()
