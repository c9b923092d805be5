"""One build, as a worker runs it: claim the version's lease (a second delivery of the message, or a second
worker, then does nothing), then app/versions/builder.py with an engine and storage of its own."""

from __future__ import annotations

import logging
import uuid

from app.core.db import make_engine, make_sessionmaker, transaction, utcnow
from app.core.storage import make_storage
from app.settings import Settings
from app.versions import repository
from app.versions.builder import build_version
from app.versions.tables import DatasetVersion

logger = logging.getLogger("samtune.versions")


def run_build(settings: Settings, version_id: uuid.UUID) -> str:
    engine = make_engine(settings.database_url)
    try:
        factory = make_sessionmaker(engine)
        with transaction(factory) as session:
            if not repository.claim(session, version_id, uuid.uuid4().hex, utcnow()):
                version = session.get(DatasetVersion, version_id)
                state = version.status if version else "gone"
                logger.info(
                    "build of version %s not claimed: it is %s (or another worker holds it)",
                    version_id,
                    state,
                )
                return state
        # The builder renews the lease as it beats (repository.touch) and writes only while it is `building`.
        return build_version(factory, make_storage(settings), settings, version_id)
    finally:
        engine.dispose()
